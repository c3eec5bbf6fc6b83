#include "tests/common/engine/reference_model.h"

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

namespace tandem::testing {
namespace {

using Matrix = std::vector<std::vector<double>>;

std::vector<double> Load(const WeightStore& w, const std::string& name) {
  auto t = w.Get(name);
  if (!t.ok()) throw std::runtime_error(std::string(t.status().message()));
  std::vector<float> f = t->ToFloat();
  return {f.begin(), f.end()};
}

// x [n][in] times W^T where W is [out][in] row-major.
Matrix Linear(const Matrix& x, const std::vector<double>& w, size_t out,
              const std::vector<double>* bias = nullptr) {
  const size_t in = x.empty() ? 0 : x[0].size();
  Matrix y(x.size(), std::vector<double>(out, 0.0));
  for (size_t i = 0; i < x.size(); ++i)
    for (size_t o = 0; o < out; ++o) {
      double s = bias ? (*bias)[o] : 0.0;
      for (size_t k = 0; k < in; ++k) s += x[i][k] * w[o * in + k];
      y[i][o] = s;
    }
  return y;
}

Matrix Norm(const Matrix& x, const std::vector<double>& w, double eps) {
  Matrix y = x;
  for (auto& row : y) {
    double ss = 0;
    for (double v : row) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / row.size() + eps);
    for (size_t i = 0; i < row.size(); ++i) row[i] = row[i] * inv * w[i];
  }
  return y;
}

// The rotary frequency of pair i, following transformers'
// _compute_llama3_parameters and the linear variant.
double InvFreq(const ModelConfig& c, int64_t i) {
  double f = std::pow(c.rope_theta, -2.0 * i / c.head_dim);
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScaling::Type::kLinear) return f / s.factor;
  if (s.type != RopeScaling::Type::kLlama3) return f;
  const double wavelen = 2 * std::numbers::pi / f;
  const double low = s.original_max_position_embeddings / s.low_freq_factor;
  const double high = s.original_max_position_embeddings / s.high_freq_factor;
  if (wavelen < high) return f;
  if (wavelen > low) return f / s.factor;
  const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                        (s.high_freq_factor - s.low_freq_factor);
  return (1 - smooth) * f / s.factor + smooth * f;
}

void Rope(const ModelConfig& c, double* v, int64_t pos) {
  const int64_t half = c.head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double a = pos * InvFreq(c, i);
    const double x1 = v[i], x2 = v[i + half];
    v[i] = x1 * std::cos(a) - x2 * std::sin(a);
    v[i + half] = x2 * std::cos(a) + x1 * std::sin(a);
  }
}

}  // namespace

std::vector<std::vector<double>> ReferenceLogits(const ModelConfig& c, const WeightStore& w,
                                                 const std::vector<int32_t>& tokens) {
  const size_t n = tokens.size(), hidden = c.hidden_size, hd = c.head_dim;
  const size_t nh = c.num_attention_heads, nkv = c.num_key_value_heads;
  const std::vector<double> embed = Load(w, "model.embed_tokens.weight");
  Matrix x(n, std::vector<double>(hidden));
  for (size_t t = 0; t < n; ++t)
    for (size_t i = 0; i < hidden; ++i) x[t][i] = embed[tokens[t] * hidden + i];

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Matrix h = Norm(x, Load(w, p + "input_layernorm.weight"), c.rms_norm_eps);
    std::vector<double> bq, bk, bv;
    if (c.attention_bias) {
      bq = Load(w, p + "self_attn.q_proj.bias");
      bk = Load(w, p + "self_attn.k_proj.bias");
      bv = Load(w, p + "self_attn.v_proj.bias");
    }
    Matrix q = Linear(h, Load(w, p + "self_attn.q_proj.weight"), nh * hd, c.attention_bias ? &bq : nullptr);
    Matrix k = Linear(h, Load(w, p + "self_attn.k_proj.weight"), nkv * hd, c.attention_bias ? &bk : nullptr);
    Matrix v = Linear(h, Load(w, p + "self_attn.v_proj.weight"), nkv * hd, c.attention_bias ? &bv : nullptr);
    for (size_t t = 0; t < n; ++t) {
      for (size_t head = 0; head < nh; ++head) Rope(c, &q[t][head * hd], t);
      for (size_t head = 0; head < nkv; ++head) Rope(c, &k[t][head * hd], t);
    }
    Matrix attn(n, std::vector<double>(nh * hd, 0.0));
    for (size_t t = 0; t < n; ++t) {
      for (size_t head = 0; head < nh; ++head) {
        const size_t kvh = head / (nh / nkv);
        std::vector<double> s(t + 1);
        double mx = -INFINITY;
        for (size_t u = 0; u <= t; ++u) {
          double d = 0;
          for (size_t i = 0; i < hd; ++i) d += q[t][head * hd + i] * k[u][kvh * hd + i];
          s[u] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[u]);
        }
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - mx));
        for (size_t u = 0; u <= t; ++u)
          for (size_t i = 0; i < hd; ++i) attn[t][head * hd + i] += s[u] / z * v[u][kvh * hd + i];
      }
    }
    Matrix o = Linear(attn, Load(w, p + "self_attn.o_proj.weight"), hidden);
    for (size_t t = 0; t < n; ++t)
      for (size_t i = 0; i < hidden; ++i) x[t][i] += o[t][i];

    h = Norm(x, Load(w, p + "post_attention_layernorm.weight"), c.rms_norm_eps);
    Matrix g = Linear(h, Load(w, p + "mlp.gate_proj.weight"), c.intermediate_size);
    Matrix u = Linear(h, Load(w, p + "mlp.up_proj.weight"), c.intermediate_size);
    for (size_t t = 0; t < n; ++t)
      for (size_t i = 0; i < g[t].size(); ++i) g[t][i] = g[t][i] / (1 + std::exp(-g[t][i])) * u[t][i];
    Matrix d = Linear(g, Load(w, p + "mlp.down_proj.weight"), hidden);
    for (size_t t = 0; t < n; ++t)
      for (size_t i = 0; i < hidden; ++i) x[t][i] += d[t][i];
  }
  Matrix h = Norm(x, Load(w, "model.norm.weight"), c.rms_norm_eps);
  const std::vector<double> head =
      Load(w, c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  return Linear(h, head, c.vocab_size);
}

}  // namespace tandem::testing
