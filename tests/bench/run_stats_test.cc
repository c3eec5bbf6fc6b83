// Percentiles, attainment, goodput, workloads and arrivals.
#include "bench/tandem_bench/run_stats.h"

#include <cmath>
#include <fstream>

#include "bench/tandem_bench/svg_plot.h"
#include "bench/tandem_bench/workload.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace tandem::bench {
namespace {

TEST(RunStatsTest, PercentilesInterpolateLikeNumpy) {
  const Percentiles p = Summarize({4, 1, 3, 2, 5});
  EXPECT_DOUBLE_EQ(p.mean, 3);
  EXPECT_DOUBLE_EQ(p.p50, 3);
  EXPECT_DOUBLE_EQ(p.p90, 4.6);
  EXPECT_DOUBLE_EQ(p.p99, 4.96);
}

TEST(RunStatsTest, AttainmentCountsFailedRequestsAsMisses) {
  LoadResult r;
  r.duration = 2.0;
  RequestRecord fast{true, "", 0, {0.1, 0.15, 0.2}, 10, {}, {}};
  RequestRecord slow_ttft{true, "", 0, {2.0, 2.05}, 10, {}, {}};
  RequestRecord slow_tpot{true, "", 0, {0.1, 0.5, 0.9}, 10, {}, {}};
  RequestRecord failed{false, "boom", 0, {}, 10, {}, {}};
  r.records = {fast, slow_ttft, slow_tpot, failed};
  const RunStats s = ComputeStats(r, SloTargets{1.0, 0.1});
  EXPECT_EQ(s.completed, 3);
  EXPECT_EQ(s.failed, 1);
  EXPECT_DOUBLE_EQ(s.attainment_ttft, 0.5);
  EXPECT_DOUBLE_EQ(s.attainment_tpot, 0.5);
  EXPECT_DOUBLE_EQ(s.attainment, 0.25);
  EXPECT_DOUBLE_EQ(s.goodput, 0.5);  // one request meeting both, over 2 s
  EXPECT_EQ(s.output_tokens, 8);
  EXPECT_EQ(s.input_tokens, 30);
  // JSON round trip.
  const RunStats back = RunStatsFromJson(ToJson(s));
  EXPECT_DOUBLE_EQ(back.attainment, s.attainment);
  EXPECT_EQ(back.ttft_samples, s.ttft_samples);
}

TEST(RunStatsTest, GoodputIsTheHighestRateMeetingTheTarget) {
  std::vector<RunStats> runs(4);
  const double rates[] = {1, 2, 4, 8}, att[] = {1.0, 0.95, 0.91, 0.5};
  for (int i = 0; i < 4; ++i) {
    runs[i].rate = rates[i];
    runs[i].attainment = att[i];
  }
  EXPECT_EQ(GoodputRate(runs, 0.9), 4);
  EXPECT_EQ(GoodputRate(runs, 0.99), 1);
  EXPECT_EQ(GoodputRate(runs, 1.01), 0);
  // Served goodput is what that run served within both objectives, not
  // the offered rate.
  const double served[] = {0.98, 1.9, 3.1, 2.0};
  for (int i = 0; i < 4; ++i) runs[i].goodput = served[i];
  EXPECT_DOUBLE_EQ(ServedGoodput(runs, 0.9), 3.1);
  EXPECT_DOUBLE_EQ(ServedGoodput(runs, 0.99), 0.98);
  EXPECT_EQ(ServedGoodput(runs, 1.01), 0);
}

TEST(WorkloadTest, LengthsFollowTheirSpecs) {
  EXPECT_FALSE(LengthSpec::Parse("0", "input_len").ok());
  EXPECT_FALSE(LengthSpec::Parse("9:3", "input_len").ok());
  EXPECT_NE(LengthSpec::Parse("x", "input_len").status().message().find("--input_len"), std::string::npos);
  WorkloadOptions o;
  o.num_requests = 500;
  o.input = *LengthSpec::Parse("10:20", "input_len");
  o.output = *LengthSpec::Parse("sharegpt", "output_len");
  o.max_output = 300;
  o.vocab_size = 1000;
  auto w = MakeWorkload(o);
  ASSERT_TRUE(w.ok());
  int lo = 1 << 30, hi = 0;
  for (const BenchRequest& r : *w) {
    lo = std::min<int>(lo, r.prompt.size());
    hi = std::max<int>(hi, r.prompt.size());
    EXPECT_GE(r.output_tokens, 4);
    EXPECT_LE(r.output_tokens, 300);
    for (int32_t id : r.prompt) EXPECT_LT(id, 1000);
  }
  EXPECT_EQ(lo, 10);
  EXPECT_EQ(hi, 20);
  // Deterministic for a seed.
  EXPECT_EQ((*MakeWorkload(o))[7].prompt, (*w)[7].prompt);
}

TEST(WorkloadTest, DatasetFilesAndErrors) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "d.jsonl").string();
  std::ofstream(path) << "{\"prompt_tokens\": 5, \"output_tokens\": 3}\n"
                      << "{\"prompt_token_ids\": [1, 2], \"output_tokens\": 7}\n";
  WorkloadOptions o;
  o.num_requests = 3;
  o.dataset = path;
  auto w = MakeWorkload(o);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)[0].prompt.size(), 5u);
  EXPECT_EQ((*w)[1].prompt, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ((*w)[2].output_tokens, 3);  // cycles
  std::ofstream(path) << "{\"output_tokens\": 3}\n";
  EXPECT_NE(MakeWorkload(o).status().message().find(":1"), std::string::npos);
}

TEST(WorkloadTest, PoissonArrivalsHaveTheOfferedRate) {
  const std::vector<double> t = PoissonArrivals(20000, 50, 9);
  const double rate = (t.size() - 1) / t.back();
  EXPECT_NEAR(rate, 50, 50 * 0.03);  // 3% at n = 20000 is ~4 standard deviations
  EXPECT_EQ(t, PoissonArrivals(20000, 50, 9));
}

TEST(SvgPlotTest, DrawsEverySeriesWithItsName) {
  const std::string svg = LinePlotSvg({Series{"alpha", {{1, 2}, {2, 3}}}, CdfSeries("beta", {0.3, 0.1, 0.2})},
                                      PlotOptions{"t <title>", "x", "y", 2.5, "target", false});
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("alpha"), std::string::npos);
  EXPECT_NE(svg.find("beta"), std::string::npos);
  EXPECT_NE(svg.find("t &lt;title&gt;"), std::string::npos);
  EXPECT_EQ(CdfSeries("c", {3, 1, 2}).points.back(), (std::pair<double, double>{3, 1.0}));
}

}  // namespace
}  // namespace tandem::bench
