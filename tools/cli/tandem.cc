// The `tandem` command line: one binary, one subcommand per job.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/util/flags_usage.h"
#include "common/util/signals.h"
#include "tools/cli/client_command.h"
#include "tools/cli/default_model_command.h"
#include "tools/cli/generate_command.h"
#include "tools/cli/health_command.h"
#include "tools/cli/up_command.h"

namespace {

constexpr char kUsage[] = R"(usage: tandem COMMAND [flags] [args]

commands:
  up [--prefill N --decode M]    run router + workers on loopback until Ctrl-C
  client [--router ADDR] PROMPT... stream generations from a running router
  generate [flags] PROMPT...     generate in this process (the monolithic engine)
  write-default-model --out DIR  write the built-in default model to DIR
  health --address ADDR [--tls_*] exit 0 when the process there is SERVING

`tandem --helpfull` lists every flag.)";

}  // namespace

int main(int argc, char** argv) {
  // `up` waits for SIGINT/SIGTERM with sigwait; block them before any thread.
  tandem::BlockTerminationSignals();
  tandem::SetUpFlagsUsage(kUsage, {"tools/cli/"});
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() < 2) {
    std::cerr << kUsage << "\n";
    return 2;
  }
  const std::string command = positional[1];
  std::vector<std::string> args(positional.begin() + 2, positional.end());
  if (command == "generate") return tandem::cli::RunGenerate(args);
  if (command == "client") return tandem::cli::RunClient(args);
  if (command == "up") return tandem::cli::RunUp();
  if (command == "write-default-model") return tandem::cli::RunWriteDefaultModel();
  if (command == "health") return tandem::cli::RunHealth();
  std::cerr << "tandem: unknown command '" << command << "'\n\n" << kUsage << "\n";
  return 2;
}
