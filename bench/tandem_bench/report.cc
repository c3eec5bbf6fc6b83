#include "bench/tandem_bench/report.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/tandem_bench/svg_plot.h"

namespace tandem::bench {
namespace {

double Load(const RunStats& r) { return r.rate > 0 ? r.rate : r.concurrency; }

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

std::string FormatTable(const std::vector<RunStats>& runs, const SloTargets& slo) {
  std::string t = absl::StrFormat(
      "%-9s %6s %6s %8s %9s | %21s | %21s | %8s %8s | %6s %6s %6s %8s\n", "load", "ok", "fail", "req/s", "out tok/s",
      "TTFT p50/p90/p99 ms", "TPOT p50/p90/p99 ms", "ITL p99", "E2E p99", "TTFT", "TPOT", "both", "goodput");
  for (const RunStats& r : runs) {
    const std::string load = r.rate > 0 ? absl::StrFormat("%.2f/s", r.rate) : absl::StrFormat("c=%d", r.concurrency);
    t += absl::StrFormat(
        "%-9s %6d %6d %8.2f %9.1f | %6.1f %6.1f %7.1f | %6.2f %6.2f %7.2f | %6.1fms %7.2fs | %5.1f%% %5.1f%% %5.1f%% %6.2f/s\n",
        load, r.completed, r.failed, r.request_throughput, r.output_tokens_per_s, 1e3 * r.ttft.p50, 1e3 * r.ttft.p90,
        1e3 * r.ttft.p99, 1e3 * r.tpot.p50, 1e3 * r.tpot.p90, 1e3 * r.tpot.p99, 1e3 * r.itl.p99, r.e2e.p99,
        100 * r.attainment_ttft, 100 * r.attainment_tpot, 100 * r.attainment, r.goodput);
  }
  t += absl::StrFormat("SLO: TTFT <= %.3f s, TPOT <= %.4f s\n", slo.ttft_seconds, slo.tpot_seconds);
  return t;
}

absl::Status WritePlots(const std::vector<RunStats>& runs, const SloTargets& slo, const std::string& dir) {
  std::filesystem::create_directories(dir);
  const bool open_loop = !runs.empty() && runs.front().rate > 0;
  const std::string x_label = open_loop ? "offered load (requests/s)" : "concurrency";
  if (runs.size() > 1) {
    Series ttft{"TTFT", {}}, tpot{"TPOT", {}}, all{"both", {}};
    for (const RunStats& r : runs) {
      ttft.points.emplace_back(Load(r), r.attainment_ttft);
      tpot.points.emplace_back(Load(r), r.attainment_tpot);
      all.points.emplace_back(Load(r), r.attainment);
    }
    PlotOptions o{"SLO attainment vs load", x_label, "requests meeting the SLO", -1, "", true};
    auto st = WriteText(dir + "/attainment_vs_rate.svg", LinePlotSvg({all, ttft, tpot}, o));
    if (!st.ok()) return st;

    std::vector<Series> lat;
    for (auto [name, pick] : std::vector<std::pair<std::string, double Percentiles::*>>{
             {"p50", &Percentiles::p50}, {"p90", &Percentiles::p90}, {"p99", &Percentiles::p99}}) {
      Series t{"TTFT " + name, {}}, p{"TPOT " + name, {}, true};
      for (const RunStats& r : runs) {
        t.points.emplace_back(Load(r), r.ttft.*pick);
        p.points.emplace_back(Load(r), r.tpot.*pick);
      }
      lat.push_back(t);
      lat.push_back(p);
    }
    PlotOptions lo{"Latency percentiles vs load", x_label, "seconds", slo.ttft_seconds, "TTFT target", false};
    st = WriteText(dir + "/latency_vs_rate.svg", LinePlotSvg(lat, lo));
    if (!st.ok()) return st;
  }
  std::vector<Series> ttft_cdf, tpot_cdf;
  for (const RunStats& r : runs) {
    const std::string name = r.rate > 0 ? absl::StrFormat("%.2f req/s", r.rate) : absl::StrFormat("c=%d", r.concurrency);
    ttft_cdf.push_back(CdfSeries(name, r.ttft_samples));
    tpot_cdf.push_back(CdfSeries(name, r.tpot_samples));
  }
  PlotOptions tc{"TTFT CDF", "time to first token (s)", "fraction of requests", -1, "", true};
  auto st = WriteText(dir + "/ttft_cdf.svg", LinePlotSvg(ttft_cdf, tc));
  if (!st.ok()) return st;
  PlotOptions pc{"TPOT CDF", "time per output token (s)", "fraction of requests", -1, "", true};
  return WriteText(dir + "/tpot_cdf.svg", LinePlotSvg(tpot_cdf, pc));
}

absl::Status WriteComparePlot(const nlohmann::json& a, const std::string& a_name, const nlohmann::json& b,
                              const std::string& b_name, const std::string& out_svg) {
  std::vector<Series> lat, tput;
  bool open_loop = true;
  for (auto [j, name] : {std::pair{&a, a_name}, std::pair{&b, b_name}}) {
    Series ttft{name + " TTFT p90", {}}, tpot{name + " TPOT p90", {}, true}, out{name, {}};
    for (const nlohmann::json& run : (*j)["runs"]) {
      const RunStats r = RunStatsFromJson(run);
      open_loop = r.rate > 0;
      ttft.points.emplace_back(Load(r), r.ttft.p90);
      tpot.points.emplace_back(Load(r), r.tpot.p90);
      out.points.emplace_back(Load(r), r.output_tokens_per_s);
    }
    lat.push_back(ttft);
    lat.push_back(tpot);
    tput.push_back(out);
  }
  const std::string x = open_loop ? "offered load (requests/s)" : "concurrency";
  PlotOptions lo{absl::StrCat(a_name, " vs ", b_name, ": p90 latency"), x, "seconds", -1, "", false};
  PlotOptions to{absl::StrCat(a_name, " vs ", b_name, ": output throughput"), x, "output tokens/s", -1, "", false};
  // One file with both charts stacked.
  std::string top = LinePlotSvg(lat, lo), bottom = LinePlotSvg(tput, to);
  auto inner = [](const std::string& svg) {
    const size_t b = svg.find('>') + 1, e = svg.rfind("</svg>");
    return svg.substr(b, e - b);
  };
  const std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"880\">\n<g>" + inner(top) +
                          "</g>\n<g transform=\"translate(0,440)\">" + inner(bottom) + "</g>\n</svg>\n";
  std::ofstream out(out_svg, std::ios::trunc);
  out << svg;
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", out_svg));
  return absl::OkStatus();
}

}  // namespace tandem::bench
