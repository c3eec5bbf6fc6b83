// Minimal leveled logging to stderr: `TANDEM_LOG(INFO) << "loaded " << n;`
// One line per statement, written atomically, prefixed with time, level,
// and the process's role name (set once at start with SetLogRole).
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace tandem {

enum class LogLevel { DEBUG = 0, INFO = 1, WARNING = 2, ERROR = 3 };

// Messages below this level are dropped. Default INFO; TANDEM_LOG_LEVEL
// (debug|info|warning|error) in the environment overrides it at start.
void SetMinLogLevel(LogLevel level);
LogLevel MinLogLevel();
void SetLogRole(std::string_view role);

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

}  // namespace tandem

#define TANDEM_LOG(level)                                                  \
  if (::tandem::LogLevel::level < ::tandem::MinLogLevel()) {               \
  } else                                                                   \
    ::tandem::LogMessage(::tandem::LogLevel::level, __FILE__, __LINE__).stream()
