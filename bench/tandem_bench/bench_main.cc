// tandem-bench: load a router the way the field measures serving systems.
//   tandem-bench --router HOST:PORT --rates 1,2,4,8 --num_requests 200
//       --input_len 512 --output_len 128 --out_dir results/
//   tandem-bench --router HOST:PORT --concurrency 1,8,32 ...
//   tandem-bench --router HOST:PORT --workload multiturn --conversations 16 --rates 2
//       --metrics 127.0.0.1:9101,127.0.0.1:9102   # prefix-cache hit rate the workers count
//   tandem-bench --endpoint http://HOST:PORT/v1 --rates 1,2 ...   # any OpenAI-compatible server
//   tandem-bench compare before.json after.json --out compare.svg
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/tandem_bench/load_runner.h"
#include "bench/tandem_bench/metrics_scrape.h"
#include "bench/tandem_bench/openai_client.h"
#include "bench/tandem_bench/prefix_workloads.h"
#include "bench/tandem_bench/report.h"
#include "bench/tandem_bench/run_stats.h"
#include "bench/tandem_bench/workload.h"
#include "common/util/flags_usage.h"

ABSL_FLAG(std::string, router, "127.0.0.1:8000", "router address");
ABSL_FLAG(std::string, endpoint, "",
          "an OpenAI-compatible API (http://HOST:PORT/v1) to load instead of --router: streaming /completions with "
          "token-id prompts (multiturn resends the prompts only: the API returns no answer ids)");
ABSL_FLAG(std::string, api_key, "", "--endpoint: bearer token (default: $OPENAI_API_KEY)");
ABSL_FLAG(std::string, endpoint_ca, "", "--endpoint https://: PEM roots that verify the server (default: the system's)");
ABSL_FLAG(std::string, served_model, "", "--endpoint: the model to ask for (default: the first /models lists)");
ABSL_FLAG(int64_t, vocab_size, 0, "--endpoint: vocabulary size to draw prompt ids from (default: /models' vocab_size)");
ABSL_FLAG(std::vector<std::string>, rates, {}, "open-loop Poisson request rates (req/s) to sweep, e.g. 1,2,4,8");
ABSL_FLAG(std::vector<std::string>, concurrency, {}, "closed-loop concurrency levels to sweep (instead of --rates)");
ABSL_FLAG(int32_t, num_requests, 100, "requests per run");
ABSL_FLAG(int32_t, warmup, 4, "requests sent (and not counted) before the first run");
ABSL_FLAG(std::string, input_len, "128", "prompt tokens: N, LO:HI (uniform) or sharegpt");
ABSL_FLAG(std::string, output_len, "64", "output tokens: N, LO:HI (uniform) or sharegpt");
ABSL_FLAG(std::string, dataset, "", "JSON-lines dataset instead of generated lengths (docs/benchmarks.md)");
ABSL_FLAG(std::string, workload, "random",
          "random (no shared prefixes), multiturn (conversations resending their history) or system_prompt "
          "(shared system prompts + random user parts); --input_len draws the user parts");
ABSL_FLAG(int32_t, conversations, 8, "multiturn: conversations, interleaved (turns = num_requests / conversations)");
ABSL_FLAG(int32_t, system_prompts, 4, "system_prompt: distinct shared system prompts");
ABSL_FLAG(std::string, system_prompt_len, "1024:4096", "system_prompt: tokens of each system prompt (N or LO:HI)");
ABSL_FLAG(std::vector<std::string>, metrics, {},
          "host:port of /metrics endpoints (workers, router) scraped before and after each run: the hit rate the "
          "workers count (tandem_prefix_cache_*) and the router's routed hit rate go into results.json");
ABSL_FLAG(int32_t, block_size, 16, "KV block size, for the oracle prefix-hit rate in results.json");
ABSL_FLAG(std::string, cache_salt, "",
          "GenerateRequest.cache_salt of every request (--router): only requests of one salt share cached KV");
ABSL_FLAG(double, slo_ttft, 1.0, "TTFT objective in seconds, for attainment and goodput");
ABSL_FLAG(double, slo_tpot, 0.1, "TPOT objective in seconds");
ABSL_FLAG(std::vector<std::string>, goodput_tpot, {},
          "more TPOT objectives (seconds) to judge the same runs at: results.json's goodput_served gets one entry each");
ABSL_FLAG(double, attainment_target, 0.9, "goodput: the highest rate at which this share meets both objectives");
ABSL_FLAG(double, deadline, 0, "per-request deadline in seconds; 0: none");
ABSL_FLAG(std::string, out_dir, "bench-results", "where results.json and the plots go");
ABSL_FLAG(uint64_t, seed, 0, "seed of the workload and the arrivals");
ABSL_FLAG(bool, progress, true, "show a progress bar");
ABSL_FLAG(std::string, out, "compare.svg", "compare: the plot to write");
ABSL_FLAG(std::vector<std::string>, names, {}, "compare: names of the two result files (default: file names)");

namespace tandem::bench {
namespace {

int Fail(const std::string& msg) {
  std::cerr << "tandem-bench: " << msg << "\n";
  return 1;
}

int Compare(const std::vector<std::string>& files) {
  if (files.size() != 2) return Fail("compare takes two results.json files");
  nlohmann::json j[2];
  for (int i = 0; i < 2; ++i) {
    std::ifstream in(files[i]);
    j[i] = nlohmann::json::parse(in, nullptr, false);
    if (j[i].is_discarded() || !j[i].contains("runs")) return Fail(files[i] + " is not a tandem-bench result");
  }
  std::vector<std::string> names = absl::GetFlag(FLAGS_names);
  if (names.size() != 2) {
    names = {std::filesystem::path(files[0]).parent_path().filename().string(),
             std::filesystem::path(files[1]).parent_path().filename().string()};
    if (names[0].empty() || names[0] == names[1]) names = {files[0], files[1]};
  }
  absl::Status s = WriteComparePlot(j[0], names[0], j[1], names[1], absl::GetFlag(FLAGS_out));
  if (!s.ok()) return Fail(std::string(s.message()));
  std::cout << "wrote " << absl::GetFlag(FLAGS_out) << "\n";
  return 0;
}

std::vector<double> ParseList(const std::vector<std::string>& v, bool* ok) {
  std::vector<double> out;
  for (const std::string& s : v) {
    double x;
    if (!absl::SimpleAtod(s, &x) || x <= 0) *ok = false;
    out.push_back(x);
  }
  return out;
}

int Run() {
  bool ok = true;
  const std::vector<double> rates = ParseList(absl::GetFlag(FLAGS_rates), &ok);
  const std::vector<double> conc = ParseList(absl::GetFlag(FLAGS_concurrency), &ok);
  if (!ok) return Fail("--rates and --concurrency take positive numbers");
  if (rates.empty() == conc.empty()) return Fail("give exactly one of --rates or --concurrency");

  auto stub = ConnectRouter(absl::GetFlag(FLAGS_router));
  v1::ModelInfo info;
  // The client every run goes through: tandem's gRPC API, or an
  // OpenAI-compatible HTTP API.
  std::unique_ptr<BenchClient> client;
  const std::string endpoint = absl::GetFlag(FLAGS_endpoint);
  if (endpoint.empty()) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status s = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
    if (!s.ok()) return Fail("cannot reach the router at " + absl::GetFlag(FLAGS_router) + ": " + s.error_message());
    client = std::make_unique<GrpcBenchClient>(*stub, absl::GetFlag(FLAGS_cache_salt));
  } else {
    std::string key = absl::GetFlag(FLAGS_api_key);
    if (key.empty() && std::getenv("OPENAI_API_KEY") != nullptr) key = std::getenv("OPENAI_API_KEY");
    auto http = OpenAiBenchClient::Create(endpoint, key, absl::GetFlag(FLAGS_endpoint_ca));
    if (!http.ok()) return Fail(std::string(http.status().message()));
    absl::StatusOr<OpenAiModel> model = (*http)->Model();
    if (!model.ok()) return Fail(std::string(model.status().message()));
    const std::string name = absl::GetFlag(FLAGS_served_model).empty() ? model->id : absl::GetFlag(FLAGS_served_model);
    (*http)->set_model(name);
    info.set_name(name);
    info.set_vocab_size(absl::GetFlag(FLAGS_vocab_size) > 0 ? absl::GetFlag(FLAGS_vocab_size) : model->vocab_size);
    info.set_max_context_length(model->max_model_len > 0 ? model->max_model_len : 4096);
    if (info.vocab_size() <= 0) return Fail("the server does not say its vocabulary size: give --vocab_size");
    client = std::move(*http);
  }
  WorkloadOptions w;
  w.num_requests = absl::GetFlag(FLAGS_num_requests);
  auto in = LengthSpec::Parse(absl::GetFlag(FLAGS_input_len), "input_len");
  auto out = LengthSpec::Parse(absl::GetFlag(FLAGS_output_len), "output_len");
  if (!in.ok()) return Fail(std::string(in.status().message()));
  if (!out.ok()) return Fail(std::string(out.status().message()));
  w.input = *in;
  w.output = *out;
  w.vocab_size = info.vocab_size();
  w.max_input = static_cast<int32_t>(std::max<int64_t>(16, info.max_context_length() / 2));
  w.max_output = static_cast<int32_t>(std::max<int64_t>(16, info.max_context_length() / 4));
  w.seed = absl::GetFlag(FLAGS_seed);
  w.dataset = absl::GetFlag(FLAGS_dataset);
  auto kind = ParseWorkloadKind(absl::GetFlag(FLAGS_workload));
  if (!kind.ok()) return Fail(std::string(kind.status().message()));
  auto system_len = LengthSpec::Parse(absl::GetFlag(FLAGS_system_prompt_len), "system_prompt_len");
  if (!system_len.ok()) return Fail(std::string(system_len.status().message()));
  if (absl::GetFlag(FLAGS_block_size) < 1) return Fail("--block_size must be >= 1");
  w.kind = *kind;
  w.conversations = absl::GetFlag(FLAGS_conversations);
  w.system_prompts = absl::GetFlag(FLAGS_system_prompts);
  w.system_prompt_len = *system_len;
  w.max_context = static_cast<int32_t>(std::max<int64_t>(16, info.max_context_length()));
  auto requests = MakeWorkload(w);
  if (!requests.ok()) return Fail(std::string(requests.status().message()));

  const SloTargets slo{absl::GetFlag(FLAGS_slo_ttft), absl::GetFlag(FLAGS_slo_tpot)};
  LoadOptions lo;
  lo.progress = absl::GetFlag(FLAGS_progress);
  lo.deadline_seconds = absl::GetFlag(FLAGS_deadline);
  if (absl::GetFlag(FLAGS_warmup) > 0) {
    // Random prompts of the configured lengths, whatever the workload: a
    // warm-up must not put the measured runs' prefixes in the caches.
    WorkloadOptions wr = w;
    wr.kind = WorkloadKind::kRandom;
    wr.seed = w.seed ^ 0x3a3a3a3aULL;
    wr.num_requests = absl::GetFlag(FLAGS_warmup);
    auto warm_or = MakeWorkload(wr);
    if (!warm_or.ok()) return Fail(std::string(warm_or.status().message()));
    std::vector<BenchRequest> warm = *std::move(warm_or);
    LoadOptions wo = lo;
    wo.concurrency = static_cast<int32_t>(warm.size());
    wo.label = "warm-up";
    RunLoad(*client, warm, wo, w.seed);
  }

  std::vector<RunStats> runs;
  std::vector<LoadResult> loads_seen;  // per run, to judge at other objectives
  std::vector<nlohmann::json> prefix_results;  // per run: hit rates
  const std::vector<std::string> endpoints = absl::GetFlag(FLAGS_metrics);
  const std::vector<double>& loads = rates.empty() ? conc : rates;
  for (double load : loads) {
    LoadOptions o = lo;
    if (!rates.empty()) {
      o.rate = load;
      o.label = absl::StrFormat("%7.2f req/s", load);
    } else {
      o.concurrency = static_cast<int32_t>(load);
      o.label = absl::StrFormat("c=%-4d", o.concurrency);
    }
    absl::StatusOr<PrefixCounters> before = ScrapePrefixCounters(endpoints);
    if (!before.ok()) return Fail(std::string(before.status().message()));
    loads_seen.push_back(RunLoad(*client, *requests, o, w.seed));
    absl::StatusOr<PrefixCounters> after = ScrapePrefixCounters(endpoints);
    if (!after.ok()) return Fail(std::string(after.status().message()));
    const PrefixHits oracle = OraclePrefixHits(loads_seen.back().records, absl::GetFlag(FLAGS_block_size), true);
    nlohmann::json prefix = {{"oracle_hit_rate", oracle.rate()}};
    // The workers' own count of this run's prompt tokens served from cache
    // (null without --metrics, or when no worker exports it).
    const double queried = after->queried_tokens - before->queried_tokens;
    const double routed = after->routed_tokens - before->routed_tokens;
    prefix["hit_rate"] = queried > 0 ? nlohmann::json((after->hit_tokens - before->hit_tokens) / queried) : nullptr;
    prefix["routed_hit_rate"] =
        routed > 0 ? nlohmann::json((after->routed_hit_tokens - before->routed_hit_tokens) / routed) : nullptr;
    prefix_results.push_back(prefix);
    // Failures are part of the result: say what they were.
    std::map<std::string, int> errors;
    for (const RequestRecord& rec : loads_seen.back().records) {
      if (!rec.ok) ++errors[rec.error];
    }
    for (const auto& [message, n] : errors) std::cerr << o.label << ": " << n << " failed: " << message << "\n";
    RunStats s = ComputeStats(loads_seen.back(), slo);
    s.rate = o.rate;
    s.concurrency = rates.empty() ? o.concurrency : 0;
    runs.push_back(std::move(s));
  }

  std::cout << FormatTable(runs, slo);
  nlohmann::json result;
  result["router"] = absl::GetFlag(FLAGS_router);
  if (!endpoint.empty()) result["endpoint"] = endpoint;
  result["model"] = info.name();
  result["workload"] = WorkloadName(w.kind);
  result["config"] = {{"num_requests", w.num_requests},
                      {"input_len", absl::GetFlag(FLAGS_input_len)},
                      {"output_len", absl::GetFlag(FLAGS_output_len)},
                      {"dataset", w.dataset},
                      {"workload", WorkloadName(w.kind)},
                      {"conversations", w.conversations},
                      {"system_prompts", w.system_prompts},
                      {"system_prompt_len", absl::GetFlag(FLAGS_system_prompt_len)},
                      {"seed", w.seed},
                      {"slo_ttft_s", slo.ttft_seconds},
                      {"slo_tpot_s", slo.tpot_seconds},
                      {"attainment_target", absl::GetFlag(FLAGS_attainment_target)}};
  for (size_t i = 0; i < runs.size(); ++i) {
    nlohmann::json run = ToJson(runs[i]);
    for (const auto& [key, value] : prefix_results[i].items()) run[key] = value;
    result["runs"].push_back(run);
    std::cout << absl::StrFormat("run %zu: prefix hit rate %s (workers), %s (routed), %.3f (oracle)\n", i,
                                 run["hit_rate"].is_null() ? "n/a" : absl::StrFormat("%.3f", run["hit_rate"].get<double>()),
                                 run["routed_hit_rate"].is_null()
                                     ? "n/a"
                                     : absl::StrFormat("%.3f", run["routed_hit_rate"].get<double>()),
                                 run["oracle_hit_rate"].get<double>());
  }
  if (!rates.empty()) {
    const double g = GoodputRate(runs, absl::GetFlag(FLAGS_attainment_target));
    result["goodput_rate"] = g;
    // Goodput as served (requests/s that met both objectives, at the
    // highest swept rate whose attainment reaches the target), at the main
    // TPOT objective and at each --goodput_tpot, from the same runs.
    std::vector<double> tpots = {slo.tpot_seconds};
    for (const std::string& t : absl::GetFlag(FLAGS_goodput_tpot)) {
      double v = 0;
      if (!absl::SimpleAtod(t, &v) || v <= 0) return Fail("--goodput_tpot takes positive seconds");
      tpots.push_back(v);
    }
    for (double tpot : tpots) {
      std::vector<RunStats> judged;
      for (size_t i = 0; i < runs.size(); ++i) {
        judged.push_back(ComputeStats(loads_seen[i], {slo.ttft_seconds, tpot}));
        judged.back().rate = runs[i].rate;
      }
      result["goodput_served"][absl::StrFormat("tpot_%.3f", tpot)] =
          ServedGoodput(judged, absl::GetFlag(FLAGS_attainment_target));
      std::cout << absl::StrFormat("goodput at TTFT %.3f s / TPOT %.3f s: %.2f req/s served\n", slo.ttft_seconds, tpot,
                                   ServedGoodput(judged, absl::GetFlag(FLAGS_attainment_target)));
    }
    std::cout << absl::StrFormat("goodput: %.2f req/s (highest swept rate with >= %.0f%% attainment)\n", g,
                                 100 * absl::GetFlag(FLAGS_attainment_target));
  }
  const std::string dir = absl::GetFlag(FLAGS_out_dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/results.json") << result.dump(1) << "\n";
  absl::Status s = WritePlots(runs, slo, dir);
  if (!s.ok()) return Fail(std::string(s.message()));
  std::cout << "wrote " << dir << "/results.json and plots\n";
  return 0;
}

}  // namespace
}  // namespace tandem::bench

int main(int argc, char** argv) {
  tandem::SetUpFlagsUsage(
      "tandem-bench --router HOST:PORT (--rates R1,R2,... | --concurrency C1,...) [flags]\n"
      "tandem-bench compare A/results.json B/results.json --out compare.svg",
      {"bench/tandem_bench/"});
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() >= 2 && std::string(args[1]) == "compare") {
    return tandem::bench::Compare(std::vector<std::string>(args.begin() + 2, args.end()));
  }
  if (args.size() >= 2 && std::string(args[1]) != "run") {
    std::cerr << "tandem-bench: unknown command '" << args[1] << "'\n";
    return 2;
  }
  return tandem::bench::Run();
}
