// gpt1_fast::cpu_decode_blocks: the transformer blocks of a bf16 decoding step on the CPU, in one call;
// gpt1_fast::transpose_to_bf16: a Conv1D weight's transposed bf16 copy, for the packing.
//
//   cpu_decode_blocks(x, params, k_cache, v_cache, start, scores_mask, n_head, eps, post_op, algorithm)
//     x        [B*T, C] float32: the embedded tokens of this step (T new positions per sequence)
//     params   12 per block, in order: qkv, qkv_b, proj, proj_b, fc, fc_b, out, out_b (the matrices packed by
//              mkldnn::_reorder_linear_weight, bf16 biases), ln_1 g, b, ln_2 g, b (float32)
//     k_cache, v_cache  one [B, H, n_ctx, D] bf16 tensor per block; columns start..start+T are written
//     scores_mask [B, 1, T, start+T] bf16, added to the attention scores (0 or -inf); None: T = 1 and no
//              cached column is padding, so the one new query sees every column
//     eps      one per LayerNorm (2 per block); post_op, algorithm: the MLP's activation as a oneDNN
//              post-op of its first product ("gelu", "tanh" / "relu", "" / "swish", "")
//   returns the last block's output [B*T, C] float32.
//
// The same ops, in the same order, as gpt1_fast/cpu_decode.py's `PackedDecoder._block`, less the
// per-op cost of Python (a few microseconds an op, ~20 ops and views a block, in a step whose
// products take well under a millisecond a block). One change: each residual add, its LayerNorm and
// the bf16 copy the next product reads are one pass over the rows (`add_layer_norm`), where PyTorch
// takes four ops (a cast of the bf16 operand, the add, the norm, the cast for the product). Its sums
// run in another order than PyTorch's: the two agree to float32 rounding, which now and then moves a
// bf16 rounding by one unit, and so the products after it a little; not bit for bit.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "simd.h"

namespace gpt1_fast {
namespace {

using at::Tensor;
using LinearPointwise = Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view,
                               c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>);
constexpr size_t kPerBlock = 12;

// bf16 x @ wᵀ + b, then the post-op (oneDNN applies it in float32, before the rounding to bf16)
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b, c10::string_view post = "none",
              std::optional<c10::string_view> algorithm = std::nullopt) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                             .typed<LinearPointwise>();
  return op.call(x, w, b, post, c10::List<std::optional<at::Scalar>>(), algorithm);
}

// One row: out = LayerNorm(x + float(y)) with gain g and bias b, out_bf16 = out rounded to bf16 (as
// Tensor.to rounds); s: C floats of scratch. Two passes for the variance, float32 throughout.
G1F_CLONES void add_layer_norm_row(const float* x, const c10::BFloat16* y, const float* g, const float* b,
                                   float eps, int64_t C, float* s, float* out, c10::BFloat16* out_bf16) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < C; ++c) {
    s[c] = x[c] + widen(y[c]);
    sum += s[c];
  }
  const float mean = sum / C;
  float sq = 0.f;
#pragma omp simd reduction(+ : sq)
  for (int64_t c = 0; c < C; ++c) sq += (s[c] - mean) * (s[c] - mean);
  const float rstd = 1.f / __builtin_sqrtf(sq / C + eps);  // the builtin inlines into the clones
  for (int64_t c = 0; c < C; ++c) {
    const float v = (s[c] - mean) * rstd * g[c] + b[c];
    out[c] = v;
    out_bf16[c].x = bf16_bits(v);
  }
}

// x float32 [N, C], y bf16 [N, C] (a product's output) -> (LayerNorm(x + y), its bf16 copy)
std::tuple<Tensor, Tensor> add_layer_norm(const Tensor& x, const Tensor& y, const Tensor& g, const Tensor& b,
                                          double eps) {
  const Tensor yc = y.contiguous();
  const int64_t N = x.size(0), C = x.size(1);
  TORCH_CHECK(g.is_contiguous() && b.is_contiguous() && g.numel() == C && b.numel() == C,
              "gpt1_fast::cpu_decode_blocks: a LayerNorm's gain and bias must be contiguous with ", C, " values");
  Tensor out = at::empty_like(x), out_bf16 = at::empty_like(yc);
  at::parallel_for(0, N, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> s(C);
    for (int64_t r = r0; r < r1; ++r)
      add_layer_norm_row(x.data_ptr<float>() + r * C, yc.data_ptr<c10::BFloat16>() + r * C, g.data_ptr<float>(),
                         b.data_ptr<float>(), static_cast<float>(eps), C, s.data(), out.data_ptr<float>() + r * C,
                         out_bf16.data_ptr<c10::BFloat16>() + r * C);
  });
  return {out, out_bf16};
}

// qkv [B*T, 3C] bf16 -> the attention's output [B*T, C] bf16; the new keys and values copied into the
// cache columns start..start+T first.
Tensor attention(const Tensor& qkv, const Tensor& k_cache, const Tensor& v_cache, int64_t start,
                 const std::optional<Tensor>& scores_mask, int64_t n_head) {
  const int64_t B = k_cache.size(0), T = qkv.size(0) / B, C = qkv.size(1) / 3;
  const Tensor h = qkv.view({B, T, 3, n_head, C / n_head}).permute({2, 0, 3, 1, 4});  // [3, B, H, T, D]
  k_cache.narrow(2, start, T).copy_(h[1]);
  v_cache.narrow(2, start, T).copy_(h[2]);
  const Tensor a = at::scaled_dot_product_attention(h[0], k_cache.narrow(2, 0, start + T),
                                                    v_cache.narrow(2, 0, start + T), scores_mask);
  return a.transpose(1, 2).reshape({B * T, C});
}

void check_args(const Tensor& x, at::TensorList params, at::TensorList k_cache, at::TensorList v_cache,
                int64_t start, const std::optional<Tensor>& scores_mask, int64_t n_head,
                at::ArrayRef<double> eps) {
  const size_t n = k_cache.size();
  TORCH_CHECK(params.size() == kPerBlock * n && v_cache.size() == n && eps.size() == 2 * n,
              "gpt1_fast::cpu_decode_blocks: ", n, " cache layers need ", kPerBlock * n, " params and ", 2 * n,
              " eps, got ", params.size(), ", ", eps.size(), " (and ", v_cache.size(), " value caches)");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "gpt1_fast::cpu_decode_blocks: x must be float32 "
              "[B*T, C], got ", x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(n > 0 && k_cache[0].dim() == 4 && k_cache[0].size(0) > 0,
              "gpt1_fast::cpu_decode_blocks: expected [B, H, n_ctx, D] caches");
  const int64_t B = k_cache[0].size(0), T = x.size(0) / B, C = x.size(1);
  // no mask: one new column a row, every cached column seen
  const std::vector<int64_t> mask =
      scores_mask ? scores_mask->sizes().vec() : std::vector<int64_t>{B, 1, 1, start + 1};
  TORCH_CHECK(B * T == x.size(0) && mask.size() == 4 && mask[0] == B && mask[2] == T && mask[3] == start + T &&
              n_head > 0 && C % n_head == 0, "gpt1_fast::cpu_decode_blocks: x ", x.sizes(), ", scores_mask ",
              at::IntArrayRef(mask), ", start ", start, ", ", B, " cache rows and n_head ", n_head, " disagree");
  for (size_t i = 0; i < n; ++i)
    for (const Tensor& c : {k_cache[i], v_cache[i]})
      TORCH_CHECK(c.dim() == 4 && c.size(0) == B && c.size(1) == n_head && c.size(3) == C / n_head &&
                  c.size(2) >= start + T, "gpt1_fast::cpu_decode_blocks: cache ", i, " is ", c.sizes(),
                  ", expected [", B, ", ", n_head, ", >= ", start + T, ", ", C / n_head, "]");
}

Tensor cpu_decode_blocks(const Tensor& x_in, at::TensorList params, at::TensorList k_cache,
                         at::TensorList v_cache, int64_t start, const std::optional<Tensor>& scores_mask,
                         int64_t n_head, at::ArrayRef<double> eps, c10::string_view post_op,
                         c10::string_view algorithm) {
  check_args(x_in, params, k_cache, v_cache, start, scores_mask, n_head, eps);
  at::AutoDispatchBelowADInplaceOrView guard;  // inference: no autograd bookkeeping for the ops below
  const std::optional<c10::string_view> alg =
      algorithm.empty() ? std::nullopt : std::optional<c10::string_view>(algorithm);
  Tensor x = x_in.contiguous(), xb = x.to(at::kBFloat16);  // the residual stream, and its bf16 copy
  for (size_t i = 0; i < k_cache.size(); ++i) {
    const Tensor* p = &params[kPerBlock * i];
    const Tensor qkv = linear(xb, p[0], p[1]);
    const Tensor a = attention(qkv, k_cache[i], v_cache[i], start, scores_mask, n_head);
    auto [n, nb] = add_layer_norm(x, linear(a, p[2], p[3]), p[8], p[9], eps[2 * i]);
    const Tensor m = linear(linear(nb, p[4], p[5], post_op, alg), p[6], p[7]);
    std::tie(x, xb) = add_layer_norm(n, m, p[10], p[11], eps[2 * i + 1]);
  }
  return x;
}

// out[i0:i1, j0:j1] = bf16(w[j0:j1, i0:i1]ᵀ): w [J, I] float32 row-major, out [I, J]
G1F_CLONES void transpose_tile(const float* w, int64_t I, int64_t J, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                               c10::BFloat16* out) {
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t j = j0; j < j1; ++j) out[i * J + j].x = bf16_bits(w[j * I + i]);
}

// w [J, I] float32, contiguous -> wᵀ [I, J] bf16, rounded to nearest even as Tensor.to rounds (NaN stays
// NaN). In 64 x 64 tiles, in parallel: PyTorch's cast and transposed copy of the same took 2.5x longer.
Tensor transpose_to_bf16(const Tensor& w) {
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kFloat && w.is_contiguous(),
              "gpt1_fast::transpose_to_bf16: expected a contiguous float32 matrix, got ", w.scalar_type(), " ",
              w.sizes(), " with strides ", w.strides());
  const int64_t J = w.size(0), I = w.size(1);
  constexpr int64_t kTile = 64;
  Tensor out = at::empty({I, J}, w.options().dtype(at::kBFloat16));
  const float* src = w.data_ptr<float>();
  auto* dst = out.data_ptr<c10::BFloat16>();
  const int64_t tiles_j = (J + kTile - 1) / kTile, tiles = (I + kTile - 1) / kTile * tiles_j;
  at::parallel_for(0, tiles, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t / tiles_j * kTile, j0 = t % tiles_j * kTile;
      transpose_tile(src, I, J, i0, std::min(i0 + kTile, I), j0, std::min(j0 + kTile, J), dst);
    }
  });
  return out;
}

}  // namespace
}  // namespace gpt1_fast

TORCH_LIBRARY_FRAGMENT(gpt1_fast, m) {
  m.def(
      "cpu_decode_blocks(Tensor x, Tensor[] params, Tensor(a!)[] k_cache, Tensor(b!)[] v_cache, int start, "
      "Tensor? scores_mask, int n_head, float[] eps, str post_op, str algorithm) -> Tensor");
  m.def("transpose_to_bf16(Tensor w) -> Tensor");
}

// the packed matrices are oneDNN tensors, which dispatch to MkldnnCPU
TORCH_LIBRARY_IMPL(gpt1_fast, CPU, m) {
  m.impl("cpu_decode_blocks", &gpt1_fast::cpu_decode_blocks);
  m.impl("transpose_to_bf16", &gpt1_fast::transpose_to_bf16);
}
TORCH_LIBRARY_IMPL(gpt1_fast, MkldnnCPU, m) { m.impl("cpu_decode_blocks", &gpt1_fast::cpu_decode_blocks); }
