// tandem-transfer-bench: how fast the real KV transports move a prompt's
// KV between two processes on one GPU host, against the device's own
// device-to-device copy bandwidth, and what they add to time-to-first-
// token. A decode-side child (forked before this process touches CUDA)
// exports a CUDA KV pool of the model's layout with --transport=auto
// (cuda_ipc and ucx_staged offers); this process sends to it with each
// transport named in --transports.
//
//   1. bandwidth: for each prompt length, all layers of ceil(len/16)
//      blocks (consecutive, and scattered: every other block, reversed),
//      SendLayer per layer then Finish; KV bytes / wall time, split into
//      StartTransfer, the SendLayer calls and Finish. Baselines: cudaMemcpy
//      device-to-device of the same bytes in this process, by the GPU's
//      clock and by the host's; and the CUDA IPC gather kernel alone.
//      Sustained (--concurrent_transfers, 8): that many transfers of a
//      length in flight at once, each on blocks of its own; all their KV
//      bytes / the wall time, against as many back-to-back memcpys.
//   2. TTFT (--ttft_lengths, needs --model): the engine's prefill of one
//      prompt alone, and with the transfer driven from on_layer_done the
//      way the prefill worker does it (start at layer 0, SendLayer per
//      layer, Finish after the pass), the two in alternation; also the
//      host time spent in the hooks and in Finish.
// Writes JSON to --out and a table to stdout. The baselines are in
// copy_baselines.h. Device runs only.
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/gpu_ceilings/gpu_ceilings.h"
#include "bench/transfer_bench/copy_baselines.h"
#include "common/engine/cuda/cuda_kv_pool.h"
#include "common/engine/engine.h"
#include "common/engine/model_loader.h"
#include "common/kv/kv_layout.h"
#include "common/transport/kv_transport.h"
#include "common/util/flags_usage.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "", "model directory (config.json gives the KV layout); empty: the built-in model");
ABSL_FLAG(bool, dummy_weights, true, "random weights for the TTFT part");
ABSL_FLAG(std::vector<std::string>, transports, std::vector<std::string>({"cuda_ipc", "ucx_staged"}),
          "prefill-side transports to measure");
ABSL_FLAG(std::vector<std::string>, lengths, std::vector<std::string>({"512", "1024", "2048", "4096", "8192"}),
          "prompt lengths (tokens) of the bandwidth part");
ABSL_FLAG(std::vector<std::string>, ttft_lengths, std::vector<std::string>({"512", "1024", "2048", "4096", "8192"}),
          "prompt lengths of the TTFT part; empty: skip it");
ABSL_FLAG(int32_t, concurrent_transfers, 8,
          "transfers in flight at once in the sustained part (a prefill batch's requests); 0: skip it");
ABSL_FLAG(int32_t, repeats, 5, "timed repetitions per point (after one warm-up); the median is reported");
ABSL_FLAG(double, gpu_memory_fraction, 0.45, "share of the GPU the engine of the TTFT part may use");
ABSL_FLAG(std::string, out, "transfer_bench.json", "JSON results");

namespace tandem {
namespace {

constexpr int32_t kBlockSize = 16;
const KvEndpointInfo kPrefill{"bench-prefill", "bench-model"};
const KvEndpointInfo kDecode{"bench-decode", "bench-model"};

std::vector<int> Ints(const std::vector<std::string>& v) {
  std::vector<int> out;
  for (const std::string& s : v) {
    int x = 0;
    if (absl::SimpleAtoi(s, &x) && x > 0) out.push_back(x);
  }
  return out;
}

using bench::Median;

bool WriteAll(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = write(fd, c, n);
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}
bool ReadAll(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = read(fd, c, n);
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// The decode side: exports a pool and waits for the parent to finish.
int DecodeChild(const KvLayout& layout, int32_t blocks, int to_parent, int from_parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  CudaKvPool pool;
  absl::Status s = pool.Init(layout, blocks);
  auto transport = CreateKvTransport("auto");
  absl::StatusOr<v1::KvPoolDescriptor> d = s.ok() && transport.ok()
                                               ? (*transport)->ExportPool(pool, kDecode)
                                               : absl::StatusOr<v1::KvPoolDescriptor>(s.ok() ? transport.status() : s);
  if (!d.ok()) {
    std::cerr << "decode child: " << d.status() << "\n";
    const uint64_t zero = 0;
    WriteAll(to_parent, &zero, sizeof(zero));
    return 1;
  }
  const std::string bytes = d->SerializeAsString();
  const uint64_t n = bytes.size();
  if (!WriteAll(to_parent, &n, sizeof(n)) || !WriteAll(to_parent, bytes.data(), n)) return 2;
  char done;
  ReadAll(from_parent, &done, 1);
  return 0;
}

// A transfer's (or a set of transfers') wall time, split where the host
// hands over: StartTransfer, the SendLayer calls (the last one launches the
// copies of a burst), and Finish (waiting for the copies to end).
struct TransferTime {
  double total = 0, start = 0, send = 0, finish = 0;
  double last_send = 0;  // of `send`: the last SendLayer, which launches a burst's copies
};

// The timed repeats of one point, phase by phase, and their medians.
struct TransferTimes {
  std::vector<double> total, start, send, finish, last_send;
  void Add(const TransferTime& t) {
    total.push_back(t.total);
    start.push_back(t.start);
    send.push_back(t.send);
    finish.push_back(t.finish);
    last_send.push_back(t.last_send);
  }
  TransferTime Median() const {
    return {bench::Median(total), bench::Median(start), bench::Median(send), bench::Median(finish),
            bench::Median(last_send)};
  }
};

// Blocks of the source pool and of the decode child's pool: room for
// every bandwidth row (scattered takes every other block of twice the
// prompt) and for the sustained part's transfers of a 4k-token prompt,
// each on blocks of its own.
int32_t SourceBlocks(int32_t max_prompt_blocks) {
  return std::max(2 * max_prompt_blocks,
                  std::max(1, absl::GetFlag(FLAGS_concurrent_transfers)) * ((4096 + kBlockSize - 1) / kBlockSize));
}

absl::StatusOr<TransferTime> TimeTransfer(KvTransport& t, KvPoolView& src, const v1::KvPoolDescriptor& dest,
                                          const std::vector<int32_t>& src_blocks,
                                          const std::vector<int32_t>& dst_blocks, const std::string& id) {
  const absl::Time start = absl::Now();
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<KvTransfer> x,
                          t.StartTransfer(src, kPrefill, dest, {id, src_blocks, dst_blocks, absl::Now() + absl::Seconds(60)}));
  const absl::Time started = absl::Now();
  const int layers = src.layout().num_layers;
  for (int l = 0; l + 1 < layers; ++l) TANDEM_RETURN_IF_ERROR(x->SendLayer(l));
  const absl::Time held = absl::Now();
  if (layers > 0) TANDEM_RETURN_IF_ERROR(x->SendLayer(layers - 1));
  const absl::Time sent = absl::Now();
  TANDEM_RETURN_IF_ERROR(x->Finish());
  const absl::Time end = absl::Now();
  return TransferTime{absl::ToDoubleSeconds(end - start), absl::ToDoubleSeconds(started - start),
                      absl::ToDoubleSeconds(sent - started), absl::ToDoubleSeconds(end - sent),
                      absl::ToDoubleSeconds(sent - held)};
}

// `k` transfers in flight at once, as a prefill batch's requests are: all
// started, then each one's layers in a burst, then every Finish; each
// copies its own `n` source blocks to its own `n` destination blocks. KV
// bytes of all of them / the wall time from the first StartTransfer to the
// last Finish: the transport's throughput, in which one transfer's host
// work (start, launch, wake-up) overlaps the others' copies.
//
// Why a burst per transfer and not layer by layer across them: with no
// compute between the layers (the prefill worker has a layer's forward
// pass there), interleaved calls hold each transfer's layers longer than
// LaunchTiming's window, so every SendLayer launches and the bench would
// time 32 x k launches (~1.5 ms at k = 8 on an H200) instead of copies.
// The phases are every StartTransfer, every SendLayer, every Finish.
absl::StatusOr<TransferTime> SustainedTime(KvTransport& t, KvPoolView& src, const v1::KvPoolDescriptor& dest,
                                               int32_t n, int k, const std::string& id) {
  const absl::Time start = absl::Now();
  std::vector<std::unique_ptr<KvTransfer>> xs;
  for (int j = 0; j < k; ++j) {
    std::vector<int32_t> s(static_cast<size_t>(n)), d(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) {
      s[static_cast<size_t>(i)] = j * n + i;
      d[static_cast<size_t>(i)] = dest.num_blocks() - 1 - (j * n + i);
    }
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<KvTransfer> x,
                            t.StartTransfer(src, kPrefill, dest,
                                            {absl::StrCat(id, "-", j), s, d, absl::Now() + absl::Seconds(60)}));
    xs.push_back(std::move(x));
  }
  const absl::Time started = absl::Now();
  for (auto& x : xs) {
    for (int l = 0; l < src.layout().num_layers; ++l) TANDEM_RETURN_IF_ERROR(x->SendLayer(l));
  }
  const absl::Time sent = absl::Now();
  for (auto& x : xs) TANDEM_RETURN_IF_ERROR(x->Finish());
  const absl::Time end = absl::Now();
  return TransferTime{absl::ToDoubleSeconds(end - start), absl::ToDoubleSeconds(started - start),
                      absl::ToDoubleSeconds(sent - started), absl::ToDoubleSeconds(end - sent)};
}

absl::Status Sustained(const KvLayout& layout, CudaKvPool& src, const v1::KvPoolDescriptor& dest, nlohmann::json& out) {
  const int want = absl::GetFlag(FLAGS_concurrent_transfers);
  if (want <= 0) return absl::OkStatus();
  const int repeats = absl::GetFlag(FLAGS_repeats);
  for (const std::string& name : absl::GetFlag(FLAGS_transports)) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<KvTransport> t, CreateKvTransport(name));
    for (int len : Ints(absl::GetFlag(FLAGS_lengths))) {
      const int32_t n = (len + kBlockSize - 1) / kBlockSize;
      // As many as both pools hold without sharing a block.
      const int k = std::min<int>(want, std::min(src.num_blocks(), dest.num_blocks()) / n);
      if (k < 2) continue;
      const double bytes = 2.0 * n * layout.block_bytes() * layout.num_layers;
      TransferTimes times;
      for (int r = 0; r <= repeats; ++r) {
        TANDEM_ASSIGN_OR_RETURN(const TransferTime st,
                                SustainedTime(*t, src, dest, n, k, absl::StrCat(name, "-sustained-", len, "-", r)));
        if (r > 0) times.Add(st);  // after a warm-up
      }
      TANDEM_ASSIGN_OR_RETURN(const double d2d, BackToBackCopyBandwidth(static_cast<size_t>(bytes), k, repeats));
      const TransferTime med = times.Median();
      const double sec = med.total, rate = k * bytes / sec;
      const auto [lo, hi] = std::minmax_element(times.total.begin(), times.total.end());
      out["sustained"].push_back({{"transport", name},
                                  {"tokens", len},
                                  {"transfers_in_flight", k},
                                  {"kv_bytes", k * bytes},
                                  {"seconds", sec},
                                  {"seconds_each_repeat", times.total},
                                  {"start_seconds", med.start},
                                  {"send_seconds", med.send},
                                  {"finish_seconds", med.finish},
                                  {"bytes_per_second", rate},
                                  {"d2d_memcpy_back_to_back_bytes_per_second", d2d},
                                  {"fraction_of_d2d", rate / d2d}});
      printf("sustained %-11s %6d tokens x %d in flight %8.1f MiB %8.3f ms (%.3f-%.3f) %7.1f GB/s  "
             "(%d back-to-back d2d memcpys %7.1f GB/s, %5.1f%%)  starts %.1f us, SendLayers %.1f us, Finishes %.1f us\n",
             name.c_str(), len, k, k * bytes / (1 << 20), sec * 1e3, *lo * 1e3, *hi * 1e3, rate / 1e9, k, d2d / 1e9,
             100 * rate / d2d, med.start * 1e6, med.send * 1e6, med.finish * 1e6);
      fflush(stdout);
    }
  }
  return absl::OkStatus();
}

absl::Status Bandwidth(const KvLayout& layout, const v1::KvPoolDescriptor& dest, nlohmann::json& out) {
  const std::vector<int> lengths = Ints(absl::GetFlag(FLAGS_lengths));
  const int repeats = absl::GetFlag(FLAGS_repeats);
  int32_t max_blocks = 1;
  for (int len : lengths) max_blocks = std::max(max_blocks, (len + kBlockSize - 1) / kBlockSize);
  CudaKvPool src, local_dst;
  TANDEM_RETURN_IF_ERROR(src.Init(layout, SourceBlocks(max_blocks)));
  TANDEM_RETURN_IF_ERROR(local_dst.Init(layout, 2 * max_blocks));
  std::map<int, CopyRate> d2d_of_length;  // the baseline, measured once per size
  for (int len : lengths) {
    const double bytes = 2.0 * ((len + kBlockSize - 1) / kBlockSize) * layout.block_bytes() * layout.num_layers;
    TANDEM_ASSIGN_OR_RETURN(d2d_of_length[len], DeviceCopyBandwidth(static_cast<size_t>(bytes), repeats));
  }
  for (const std::string& name : absl::GetFlag(FLAGS_transports)) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<KvTransport> t, CreateKvTransport(name));
    for (int len : lengths) {
      const int32_t n = (len + kBlockSize - 1) / kBlockSize;
      const double bytes = 2.0 * n * layout.block_bytes() * layout.num_layers;
      for (const char* pattern : {"consecutive", "scattered"}) {
        std::vector<int32_t> s, d;
        for (int32_t i = 0; i < n; ++i) {
          const bool scattered = pattern[0] == 's';
          s.push_back(scattered ? 2 * i : i);
          d.push_back(scattered ? (dest.num_blocks() - 1 - 2 * i) % dest.num_blocks() : i);
        }
        TransferTimes times;
        for (int r = 0; r <= repeats; ++r) {
          TANDEM_ASSIGN_OR_RETURN(const TransferTime tt,
                                  TimeTransfer(*t, src, dest, s, d, absl::StrCat(name, "-", len, "-", r)));
          if (r > 0) times.Add(tt);  // after a warm-up
        }
        const TransferTime med = times.Median();
        const double sec = med.total;
        const CopyRate d2d = d2d_of_length[len];
        // The copy by itself, for the transport whose copy it is.
        double kernel = 0;
        if (name == "cuda_ipc") {
          std::vector<int32_t> local_d(d.size());
          for (size_t i = 0; i < d.size(); ++i) local_d[i] = d[i] % local_dst.num_blocks();
          TANDEM_ASSIGN_OR_RETURN(kernel, GatherKernelBandwidth(src, local_dst, s, local_d, repeats));
        }
        nlohmann::json row = {{"transport", name},
                              {"tokens", len},
                              {"pattern", pattern},
                              {"kv_bytes", bytes},
                              {"seconds", sec},
                              {"start_seconds", med.start},
                              {"send_seconds", med.send},
                              {"finish_seconds", med.finish},
                              {"last_send_seconds", med.last_send},
                              {"bytes_per_second", bytes / sec},
                              {"d2d_memcpy_bytes_per_second", d2d.gpu},
                              {"d2d_memcpy_wall_bytes_per_second", d2d.wall},
                              {"fraction_of_d2d", bytes / sec / d2d.gpu},
                              {"fraction_of_d2d_wall", bytes / sec / d2d.wall},
                              {"gather_kernel_bytes_per_second", kernel}};
        printf("%-11s %6d tokens %-11s %8.1f MiB %8.3f ms %7.1f GB/s  (d2d memcpy %7.1f GB/s, %5.1f%%; "
               "host-timed %7.1f GB/s, %5.1f%%)  start %.1f us, SendLayers %.1f us (last %.1f), Finish %.1f us",
               name.c_str(), len, pattern, bytes / (1 << 20), sec * 1e3, bytes / sec / 1e9, d2d.gpu / 1e9,
               100 * bytes / sec / d2d.gpu, d2d.wall / 1e9, 100 * bytes / sec / d2d.wall, med.start * 1e6,
               med.send * 1e6, med.last_send * 1e6, med.finish * 1e6);
        if (kernel > 0) printf("; gather kernel alone %7.1f GB/s", kernel / 1e9);
        printf("\n");
        fflush(stdout);
        out["bandwidth"].push_back(row);
      }
    }
  }
  return Sustained(layout, src, dest, out);
}

// One prompt through the engine; with `t`, its KV shipped to `dest` as the
// prefill loop does.
struct PrefillTime {
  double seconds = 0;         // from the step's start until Finish returned
  double hook_seconds = 0;    // host time inside on_layer_done (StartTransfer + SendLayer), on the
                              // pass's critical path: the engine synchronizes before each hook
  double finish_seconds = 0;  // Finish, after the pass
  int64_t kv_bytes = 0;
};

absl::StatusOr<PrefillTime> TimePrefill(Engine& engine, int len, KvTransport* t, const v1::KvPoolDescriptor& dest,
                                        uint64_t salt) {
  std::mt19937 rng(static_cast<uint32_t>(len * 7919 + salt));
  Sequence seq;
  seq.id = static_cast<SeqId>(1000 + salt);
  for (int i = 0; i < len; ++i) seq.tokens.push_back(static_cast<int32_t>(rng() % 1000) + 10);
  seq.prompt_len = len;
  seq.sampling.temperature = 0;
  std::unique_ptr<KvTransfer> transfer;
  absl::Status hook;
  PrefillTime out;
  auto on_layer = [&](int layer) {
    if (t == nullptr || !hook.ok()) return;
    const absl::Time entered = absl::Now();
    if (layer == 0) {
      absl::StatusOr<std::vector<int32_t>> src = engine.kv_cache().BlockTable(seq.id);
      if (!src.ok()) {
        hook = src.status();
        return;
      }
      std::vector<int32_t> dst(src->size());
      for (size_t i = 0; i < dst.size(); ++i) dst[i] = static_cast<int32_t>(i);
      auto x = t->StartTransfer(engine.backend().kv_pool(), kPrefill, dest,
                                {absl::StrCat("ttft-", len, "-", salt), *src, dst, absl::Now() + absl::Seconds(60)});
      if (!x.ok()) {
        hook = x.status();
        return;
      }
      transfer = std::move(*x);
    }
    hook = transfer->SendLayer(layer);
    out.hook_seconds += absl::ToDoubleSeconds(absl::Now() - entered);
  };
  Sequence* batch[] = {&seq};
  const absl::Time start = absl::Now();
  absl::StatusOr<StepPlan> plan = PlanWhole(engine.kv_cache(), batch);
  absl::Status s = plan.status();
  if (s.ok()) s = engine.Step(*plan, on_layer).status();
  if (s.ok()) s = hook;
  const absl::Time computed = absl::Now();
  if (s.ok() && transfer != nullptr) s = transfer->Finish();
  const absl::Time end = absl::Now();
  out.seconds = absl::ToDoubleSeconds(end - start);
  out.finish_seconds = absl::ToDoubleSeconds(end - computed);
  if (transfer != nullptr) out.kv_bytes = transfer->bytes_sent();
  transfer.reset();
  engine.Release(seq);
  TANDEM_RETURN_IF_ERROR(s);
  return out;
}

// Per length and transport, the prefill alone and with the transfer in
// alternation (alone, with, alone, with, ...), so that drift (clocks,
// another transport's threads winding down) weighs on both sides alike;
// the overhead is the difference of the two medians.
absl::Status Ttft(const LoadedModel& model, const v1::KvPoolDescriptor& dest, nlohmann::json& out) {
  const std::vector<int> lengths = Ints(absl::GetFlag(FLAGS_ttft_lengths));
  if (lengths.empty()) return absl::OkStatus();
  BackendOptions o;
  o.device = BackendOptions::Device::kCuda;
  o.block_size = kBlockSize;
  o.num_kv_blocks = 0;
  o.gpu_memory_fraction = absl::GetFlag(FLAGS_gpu_memory_fraction);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<ModelBackend> backend, CreateBackend(model, o));
  Engine engine(std::move(backend));
  std::vector<std::unique_ptr<KvTransport>> transports;
  std::vector<std::string> names;
  for (const std::string& name : absl::GetFlag(FLAGS_transports)) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<KvTransport> t, CreateKvTransport(name));
    transports.push_back(std::move(t));
    names.push_back(name);
  }
  const int repeats = absl::GetFlag(FLAGS_repeats);
  for (int len : lengths) {
    if ((len + kBlockSize - 1) / kBlockSize > dest.num_blocks()) continue;
    for (size_t k = 0; k < transports.size(); ++k) {
      std::vector<double> alone, with, hooks, finishes;
      int64_t kv_bytes = 0;
      for (int r = 0; r <= repeats; ++r) {
        TANDEM_ASSIGN_OR_RETURN(PrefillTime a, TimePrefill(engine, len, nullptr, dest, 2 * r));
        TANDEM_ASSIGN_OR_RETURN(PrefillTime w, TimePrefill(engine, len, transports[k].get(), dest, 2 * r + 1));
        if (r == 0) continue;  // warm-up
        alone.push_back(a.seconds);
        with.push_back(w.seconds);
        hooks.push_back(w.hook_seconds);
        finishes.push_back(w.finish_seconds);
        kv_bytes = w.kv_bytes;
      }
      const double sec = Median(with), base = Median(alone), hook = Median(hooks), finish = Median(finishes);
      nlohmann::json row = {{"transport", names[k]},       {"tokens", len},
                            {"seconds", sec},              {"prefill_alone_seconds", base},
                            {"overhead_seconds", sec - base}, {"hook_seconds", hook},
                            {"finish_seconds", finish},    {"kv_bytes", kv_bytes}};
      printf("TTFT %-11s %6d tokens %9.2f ms (prefill alone %9.2f ms, +%6.2f ms, %.1f MiB KV; "
             "in hooks %.3f ms, Finish %.3f ms)\n",
             names[k].c_str(), len, sec * 1e3, base * 1e3, (sec - base) * 1e3,
             static_cast<double>(kv_bytes) / (1 << 20), hook * 1e3, finish * 1e3);
      fflush(stdout);
      out["ttft"].push_back(row);
    }
  }
  return absl::OkStatus();
}

absl::Status Run() {
  TANDEM_ASSIGN_OR_RETURN(LoadedModel model, LoadModel({absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_dummy_weights), 0}));
  const KvLayout layout = KvLayoutFor(model.config, kBlockSize, DType::kBF16);
  int32_t max_prompt_blocks = 1;
  for (int len : Ints(absl::GetFlag(FLAGS_lengths))) {
    max_prompt_blocks = std::max(max_prompt_blocks, (len + kBlockSize - 1) / kBlockSize);
  }
  int32_t blocks = SourceBlocks(max_prompt_blocks);
  for (int len : Ints(absl::GetFlag(FLAGS_ttft_lengths))) blocks = std::max(blocks, (len + kBlockSize - 1) / kBlockSize);

  int to_parent[2], to_child[2];
  if (pipe(to_parent) != 0 || pipe(to_child) != 0) return absl::InternalError("pipe");
  const pid_t child = fork();
  if (child < 0) return absl::InternalError("fork");
  if (child == 0) _exit(DecodeChild(layout, blocks, to_parent[1], to_child[0]));
  close(to_parent[1]);
  close(to_child[0]);
  auto stop_child = [&] {
    WriteAll(to_child[1], "x", 1);
    close(to_child[1]);
    int status = 0;
    waitpid(child, &status, 0);
  };
  uint64_t n = 0;
  std::string bytes;
  v1::KvPoolDescriptor dest;
  if (!ReadAll(to_parent[0], &n, sizeof(n)) || n == 0 || n > (1u << 24) ||
      !ReadAll(to_parent[0], (bytes.resize(n), bytes.data()), n) || !dest.ParseFromString(bytes)) {
    stop_child();
    return absl::UnavailableError("the decode child did not export its pool (see its error above)");
  }
  nlohmann::json out = {{"model", model.name},
                        {"layout", layout.DebugString()},
                        {"decode_pool_transport", dest.transport()},
                        {"bandwidth", nlohmann::json::array()},
                        {"sustained", nlohmann::json::array()},
                        {"ttft", nlohmann::json::array()}};
  absl::Status s = Bandwidth(layout, dest, out);
  if (s.ok()) s = Ttft(model, dest, out);
  stop_child();
  std::ofstream(absl::GetFlag(FLAGS_out)) << out.dump(2) << "\n";
  return s;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
  tandem::SetUpFlagsUsage("tandem-transfer-bench: KV transfer benchmark between a prefill and a decode process [flags]", {"bench/transfer_bench/", "bench/gpu_ceilings/"});
  absl::ParseCommandLine(argc, argv);
  absl::Status s = tandem::Run();
  if (!s.ok()) {
    std::cerr << "tandem-transfer-bench: " << s << "\n";
    return 1;
  }
  return 0;
}
