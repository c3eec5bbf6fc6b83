#include "bench/tandem_bench/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace tandem::bench {
namespace {

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string Num(double v) {
  char buf[32];
  if (v != 0 && (std::abs(v) < 0.01 || std::abs(v) >= 10000)) {
    std::snprintf(buf, sizeof buf, "%.2g", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  }
  return buf;
}

std::string Escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

// A "nice" step for about `ticks` ticks over [lo, hi].
double NiceStep(double lo, double hi, int ticks) {
  const double raw = (hi - lo) / ticks;
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * mag) return m * mag;
  }
  return 10 * mag;
}

}  // namespace

Series CdfSeries(std::string name, std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  Series s{std::move(name), {}, false};
  for (size_t i = 0; i < samples.size(); ++i) s.points.emplace_back(samples[i], (i + 1.0) / samples.size());
  return s;
}

std::string LinePlotSvg(const std::vector<Series>& series, const PlotOptions& o) {
  const double W = 760, H = 440, L = 80, R = 190, T = 40, B = 60;
  double x0 = INFINITY, x1 = -INFINITY, y0 = 0, y1 = -INFINITY;
  for (const Series& s : series) {
    for (auto [x, y] : s.points) {
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y1 = std::max(y1, y);
    }
  }
  if (o.y_reference >= 0) y1 = std::max(y1, o.y_reference);
  if (o.y_percent) y1 = std::max(y1, 1.0);
  if (!std::isfinite(x0)) x0 = 0, x1 = 1;
  if (x1 <= x0) x1 = x0 + 1;
  if (!(y1 > y0)) y1 = 1;
  y1 *= 1.05;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << Escape(o.title)
      << "</text>\n";
  // Axes, grid and ticks.
  const double xs = NiceStep(x0, x1, 8), ys = NiceStep(y0, y1, 6);
  for (double x = std::ceil(x0 / xs) * xs; x <= x1 + 1e-12; x += xs) {
    svg << "<line x1=\"" << px(x) << "\" y1=\"" << T << "\" x2=\"" << px(x) << "\" y2=\"" << H - B
        << "\" stroke=\"#eee\"/><text x=\"" << px(x) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">"
        << Num(x) << "</text>\n";
  }
  for (double y = 0; y <= y1 + 1e-12; y += ys) {
    svg << "<line x1=\"" << L << "\" y1=\"" << py(y) << "\" x2=\"" << W - R << "\" y2=\"" << py(y)
        << "\" stroke=\"#eee\"/><text x=\"" << L - 6 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">"
        << (o.y_percent ? Num(100 * y) + "%" : Num(y)) << "</text>\n";
  }
  svg << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << W - L - R << "\" height=\"" << H - T - B
      << "\" fill=\"none\" stroke=\"#444\"/>\n";
  svg << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 18 << "\" text-anchor=\"middle\">" << Escape(o.x_label)
      << "</text>\n<text transform=\"translate(18," << (T + H - B) / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
      << Escape(o.y_label) << "</text>\n";
  if (o.y_reference >= 0) {
    svg << "<line x1=\"" << L << "\" y1=\"" << py(o.y_reference) << "\" x2=\"" << W - R << "\" y2=\""
        << py(o.y_reference) << "\" stroke=\"#000\" stroke-dasharray=\"2,3\"/><text x=\"" << W - R - 4 << "\" y=\""
        << py(o.y_reference) - 4 << "\" text-anchor=\"end\">" << Escape(o.y_reference_label) << "</text>\n";
  }
  // Series and legend.
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    const char* color = kColors[i % 8];
    svg << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\""
        << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << " points=\"";
    for (auto [x, y] : s.points) svg << px(x) << "," << py(y) << " ";
    svg << "\"/>\n";
    if (s.points.size() < 40) {
      for (auto [x, y] : s.points) {
        svg << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"3\" fill=\"" << color << "\"/>\n";
      }
    }
    const double ly = T + 14 + 18 * i;
    svg << "<line x1=\"" << W - R + 12 << "\" y1=\"" << ly - 4 << "\" x2=\"" << W - R + 36 << "\" y2=\"" << ly - 4
        << "\" stroke=\"" << color << "\" stroke-width=\"2\"" << (s.dashed ? " stroke-dasharray=\"6,4\"" : "")
        << "/><text x=\"" << W - R + 42 << "\" y=\"" << ly << "\">" << Escape(s.name) << "</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace tandem::bench
