// gpt1_fast::_C: op schemas (TORCH_LIBRARY), the CPU kernels, and an importable empty module.
//
// Ops (they show as gpt1_fast::... in the profiler and to torch.compile):
//   global_norm(Tensor[] tensors) -> Tensor
//       sqrt(sum of squares of all elements of all tensors), fp32 0-d tensor on their device.
//   openai_adam_(params, grads, exp_avgs, exp_avg_sqs, steps, grad_norm?, max_grad_norm, lr,
//                schedule, warmup, t_total, b1, b2, eps, l2, vector_l2) -> ()
//       One SPEC §5 step for one parameter group; grads are scaled by
//       max_grad_norm / max(grad_norm, max_grad_norm) on the fly (p.grad itself is not written);
//       each steps[i] (0-d fp32, on the CPU or the parameter's device) is read as t, then += 1.
//
// CPU: one at::parallel_for over fixed 32K-element chunks of all tensors (chunk partial sums for the
// norm, in fp64, are combined in chunk order, so results do not depend on the thread count); the inner loops
// are plain loops that GCC vectorises, compiled for AVX-512, AVX2+FMA and baseline x86-64 and picked
// at load time (target_clones), so one binary is fast everywhere it runs.
#include <Python.h>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "openai_adam.h"
#include "openai_adam_checks.h"
#include "simd.h"

extern "C" {
// `import gpt1_fast._C` loads this library (and so registers the ops); the module itself is empty.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace gpt1_fast {

// IEEE half -> float without branches (the algorithm of c10::detail::fp16_ieee_to_fp32_value); in this
// namespace, beside simd.h's widen overloads, so that the three are one overload set.
G1F_INLINE float widen(c10::Half x) {
  const uint32_t w = static_cast<uint32_t>(x.x) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = f32_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = f32_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  return f32_from_bits(sign | (two_w < (1u << 27) ? bits_from_f32(denormalized) : bits_from_f32(normalized)));
}

namespace {

constexpr int64_t kCpuChunk = 1 << 15;
constexpr int kBuf = 256;  // fp16/bf16 grads are widened to fp32 through a stack buffer of this size

struct Scalars {
  float lrt, coef, b1, omb1, b2, omb2, eps, l2;  // l2 = 0 for parameters without decay
};

// Same operation order as the CUDA kernel and the multi-tensor reference in opt.py. `upd + 0 * p`
// is exactly `upd` (finite p), so parameters without decay need no separate loop.
G1F_INLINE void adam_span(float* __restrict p, const float* __restrict g, float* __restrict m,
                          float* __restrict v, int64_t n, const Scalars& s) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * s.coef;
    const float mi = m[i] * s.b1 + s.omb1 * gi;
    const float vi = v[i] * s.b2 + s.omb2 * gi * gi;
    const float upd = mi / (__builtin_sqrtf(vi) + s.eps) + s.l2 * p[i];  // builtin: std::sqrt would not inline into the clones
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] - s.lrt * upd;
  }
}

template <typename GT>
G1F_INLINE void adam_chunk_impl(float* p, const GT* g, float* m, float* v, int64_t n, const Scalars& s) {
  float buf[kBuf];
  for (int64_t i0 = 0; i0 < n; i0 += kBuf) {
    const int64_t len = std::min<int64_t>(kBuf, n - i0);
    for (int64_t j = 0; j < len; ++j) buf[j] = widen(g[i0 + j]);
    adam_span(p + i0, buf, m + i0, v + i0, len, s);
  }
}

G1F_CLONES void adam_chunk_f32(float* p, const float* g, float* m, float* v, int64_t n, const Scalars& s) {
  adam_span(p, g, m, v, n, s);
}
G1F_CLONES void adam_chunk_bf16(float* p, const c10::BFloat16* g, float* m, float* v, int64_t n, const Scalars& s) {
  adam_chunk_impl(p, g, m, v, n, s);
}
G1F_CLONES void adam_chunk_f16(float* p, const c10::Half* g, float* m, float* v, int64_t n, const Scalars& s) {
  adam_chunk_impl(p, g, m, v, n, s);
}

// Sum of squares of n elements: 16 independent fp64 lanes (vectorisable; fp32 lanes over a 32K chunk
// would lose ~1e-6 of the norm, visible in the clipped update).
template <typename GT>
G1F_INLINE double sumsq_impl(const GT* x, int64_t n) {
  constexpr int L = 16;
  double acc[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    for (int j = 0; j < L; ++j) {
      const double xj = widen(x[i + j]);
      acc[j] += xj * xj;
    }
  }
  double total = 0.0;
  for (; i < n; ++i) total += static_cast<double>(widen(x[i])) * widen(x[i]);
  for (int j = 0; j < L; ++j) total += acc[j];
  return total;
}

G1F_CLONES double sumsq_f32(const float* x, int64_t n) { return sumsq_impl(x, n); }
G1F_CLONES double sumsq_bf16(const c10::BFloat16* x, int64_t n) { return sumsq_impl(x, n); }
G1F_CLONES double sumsq_f16(const c10::Half* x, int64_t n) { return sumsq_impl(x, n); }

struct Work {
  int tensor;
  int64_t begin, end;
};

std::vector<Work> chunk_tensors(const std::vector<int64_t>& sizes) {
  std::vector<Work> work;
  for (size_t t = 0; t < sizes.size(); ++t)
    for (int64_t b = 0; b < sizes[t]; b += kCpuChunk)
      work.push_back({static_cast<int>(t), b, std::min(sizes[t], b + kCpuChunk)});
  return work;
}

at::Tensor global_norm_cpu(at::TensorList tensors) {
  std::vector<at::Tensor> gs;
  std::vector<int64_t> sizes;
  for (const auto& t : tensors) {
    TORCH_CHECK(t.device().is_cpu(), "gpt1_fast::global_norm: all tensors must be on the CPU");
    check_grad_dtype(t, "global_norm");
    gs.push_back(t.contiguous());
    sizes.push_back(t.numel());
  }
  const std::vector<Work> work = chunk_tensors(sizes);
  std::vector<double> partial(work.size(), 0.0);
  at::parallel_for(0, static_cast<int64_t>(work.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t w = lo; w < hi; ++w) {
      const Work& k = work[w];
      const at::Tensor& g = gs[k.tensor];
      const int64_t n = k.end - k.begin;
      switch (g.scalar_type()) {
        case at::kFloat: partial[w] = sumsq_f32(g.const_data_ptr<float>() + k.begin, n); break;
        case at::kBFloat16: partial[w] = sumsq_bf16(g.const_data_ptr<c10::BFloat16>() + k.begin, n); break;
        default: partial[w] = sumsq_f16(g.const_data_ptr<c10::Half>() + k.begin, n); break;
      }
    }
  });
  double total = 0.0;
  for (double x : partial) total += x;
  at::Tensor out = at::empty({}, at::TensorOptions().dtype(at::kFloat));
  *out.data_ptr<float>() = static_cast<float>(std::sqrt(total));
  return out;
}

void openai_adam_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                     at::TensorList exp_avg_sqs, at::TensorList steps, const std::optional<at::Tensor>& grad_norm,
                     double max_grad_norm, double lr, int64_t schedule, double warmup, double t_total, double b1,
                     double b2, double eps, double l2, bool vector_l2) {
  check_adam_lists(params, grads, exp_avgs, exp_avg_sqs, steps);
  const AdamHyper h = make_hyper(max_grad_norm, lr, schedule, warmup, t_total, b1, b2, eps, l2);
  float coef = 1.f;
  if (grad_norm.has_value() && max_grad_norm > 0) {
    TORCH_CHECK(grad_norm->device().is_cpu() && grad_norm->numel() == 1 && grad_norm->scalar_type() == at::kFloat,
                "gpt1_fast::openai_adam_: grad_norm must be a one-element float32 CPU tensor here");
    coef = clip_coef(*grad_norm->const_data_ptr<float>(), h.max_grad_norm);
  }
  const size_t n = params.size();
  std::vector<at::Tensor> gs(n);
  std::vector<Scalars> scalars(n);
  std::vector<int64_t> sizes(n);
  for (size_t i = 0; i < n; ++i) {
    TORCH_CHECK(params[i].device().is_cpu(), "gpt1_fast::openai_adam_ (CPU): param ", i, " is not on the CPU");
    gs[i] = grads[i].contiguous();
    const float t = *steps[i].const_data_ptr<float>();
    const bool decay = params[i].dim() > 1 || vector_l2;
    scalars[i] = Scalars{static_cast<float>(openai_adam_lrt(t, h)), coef, static_cast<float>(b1),
                         static_cast<float>(1.0 - b1), static_cast<float>(b2), static_cast<float>(1.0 - b2),
                         h.eps, decay ? h.l2 : 0.f};
    sizes[i] = params[i].numel();
  }
  const std::vector<Work> work = chunk_tensors(sizes);
  at::parallel_for(0, static_cast<int64_t>(work.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t w = lo; w < hi; ++w) {
      const Work& k = work[w];
      const int i = k.tensor;
      float* p = params[i].data_ptr<float>() + k.begin;
      float* m = exp_avgs[i].data_ptr<float>() + k.begin;
      float* v = exp_avg_sqs[i].data_ptr<float>() + k.begin;
      const int64_t len = k.end - k.begin;
      switch (gs[i].scalar_type()) {
        case at::kFloat: adam_chunk_f32(p, gs[i].const_data_ptr<float>() + k.begin, m, v, len, scalars[i]); break;
        case at::kBFloat16:
          adam_chunk_bf16(p, gs[i].const_data_ptr<c10::BFloat16>() + k.begin, m, v, len, scalars[i]);
          break;
        default: adam_chunk_f16(p, gs[i].const_data_ptr<c10::Half>() + k.begin, m, v, len, scalars[i]); break;
      }
    }
  });
  for (size_t i = 0; i < n; ++i) *steps[i].data_ptr<float>() += 1.f;
}

}  // namespace
}  // namespace gpt1_fast

TORCH_LIBRARY(gpt1_fast, m) {
  m.def("global_norm(Tensor[] tensors) -> Tensor");
  m.def(
      "openai_adam_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
      "Tensor(d!)[] steps, Tensor? grad_norm, float max_grad_norm, float lr, int schedule, float warmup, "
      "float t_total, float b1, float b2, float eps, float l2, bool vector_l2) -> ()");
}

TORCH_LIBRARY_IMPL(gpt1_fast, CPU, m) {
  m.impl("global_norm", &gpt1_fast::global_norm_cpu);
  m.impl("openai_adam_", &gpt1_fast::openai_adam_cpu);
}
