// Small, dependency-free SVG line charts for benchmark results: lines over
// x (rates), and CDFs of latency samples.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace tandem::bench {

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in order
  bool dashed = false;
};

struct PlotOptions {
  std::string title, x_label, y_label;
  // A horizontal reference line (an SLO target), drawn when set.
  double y_reference = -1;
  std::string y_reference_label;
  bool y_percent = false;  // y in [0, 1] shown as %
};

std::string LinePlotSvg(const std::vector<Series>& series, const PlotOptions& options);

// An empirical CDF series of `samples`.
Series CdfSeries(std::string name, std::vector<double> samples);

}  // namespace tandem::bench
