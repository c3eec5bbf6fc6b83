#include "common/util/logging.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>

namespace tandem {
namespace {

LogLevel LevelFromEnv() {
  const char* v = std::getenv("TANDEM_LOG_LEVEL");
  if (v == nullptr) return LogLevel::INFO;
  if (!strcasecmp(v, "debug")) return LogLevel::DEBUG;
  if (!strcasecmp(v, "warning")) return LogLevel::WARNING;
  if (!strcasecmp(v, "error")) return LogLevel::ERROR;
  return LogLevel::INFO;
}

std::atomic<int> g_min_level{static_cast<int>(LevelFromEnv())};
std::mutex g_role_mu;
std::string g_role = "tandem";

}  // namespace

void SetMinLogLevel(LogLevel level) { g_min_level = static_cast<int>(level); }
LogLevel MinLogLevel() { return static_cast<LogLevel>(g_min_level.load()); }
void SetLogRole(std::string_view role) {
  std::lock_guard<std::mutex> lock(g_role_mu);
  g_role = std::string(role);
}

LogMessage::LogMessage(LogLevel level, const char* file, int line) : level_(level) {
  static constexpr char kLetters[] = {'D', 'I', 'W', 'E'};
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm;
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
  const char* base = std::strrchr(file, '/');
  std::string role;
  {
    std::lock_guard<std::mutex> lock(g_role_mu);
    role = g_role;
  }
  char ms_buf[8];
  std::snprintf(ms_buf, sizeof(ms_buf), ".%03d", ms);
  stream_ << kLetters[static_cast<int>(level)] << ' ' << buf << ms_buf << ' ' << role << ' '
          << (base ? base + 1 : file) << ':' << line << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string s = stream_.str();
  // One write() per line keeps lines from different threads unmixed.
  ssize_t unused = ::write(STDERR_FILENO, s.data(), s.size());
  (void)unused;
}

}  // namespace tandem
