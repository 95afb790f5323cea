// Fused OpenAI-Adam (SPEC §5): shared step-size math and the CUDA launcher interface.
//
// Free of torch headers on purpose: openai_adam_cuda.cu includes this and must compile with a bare
// nvcc (no CUDA torch needed), so the kernels can be built and checked for spills on any machine.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define G1F_HD __host__ __device__ __forceinline__
#else
#define G1F_HD inline
#endif

namespace gpt1_fast {

// Must match gpt1_fast/opt.py SCHEDULE_IDS.
enum Schedule : int { kWarmupCosine = 0, kWarmupConstant = 1, kWarmupLinear = 2, kWarmupThenCosine = 3 };

// Everything of a parameter group that enters the step size, in the TF release's precision (double
// on the host; the same double arithmetic on the device, so CPU, CUDA and opt.lr_at agree).
struct AdamHyper {
  double lr, warmup, t_total, b1, b2;
  int schedule;
  float eps, l2, max_grad_norm;  // max_grad_norm <= 0: no clipping
};

// lrt = lr * schedule(t / t_total) * sqrt(1 - b2^(t+1)) / (1 - b1^(t+1)); t = steps done before.
G1F_HD double openai_adam_lrt(double t, const AdamHyper& h) {
  double factor = 1.0;
  if (h.t_total > 0) {
    const double x = t / h.t_total;
    const double s = (h.warmup > 0.0 && x <= h.warmup) ? 1.0 : 0.0;  // warmup <= 0: none, as opt.py
    const double ramp = s != 0.0 ? x / h.warmup : 0.0;  // (opt.py divides unconditionally; same value)
    if (h.schedule == kWarmupLinear) {
      factor = (ramp + (1.0 - s)) * (1.0 - x);
    } else if (h.schedule == kWarmupThenCosine) {  // cosine from the end of the warm-up (opt.warmup_then_cosine)
      if (s != 0.0) {
        factor = ramp;
      } else {
        const double w = h.warmup > 0.0 ? h.warmup : 0.0;  // warmup <= 0: none
#if defined(__CUDA_ARCH__)
        const double c = cospi((x - w) / (1.0 - w));
#else
        const double c = std::cos(3.141592653589793 * (x - w) / (1.0 - w));  // as opt.py
#endif
        factor = 0.5 * (1.0 + c);
      }
    } else if (h.schedule == kWarmupCosine) {
#if defined(__CUDA_ARCH__)
      const double c = cospi(x);  // no Payne-Hanek reduction: keeps the kernel free of a stack frame
#else
      const double c = std::cos(3.141592653589793 * x);  // as math.cos(math.pi * x)
#endif
      factor = ramp + (1.0 - s) * (0.5 * (1.0 + c));
    } else {
      factor = ramp + (1.0 - s);
    }
  }
  return h.lr * factor * sqrt(1.0 - pow(h.b2, t + 1.0)) / (1.0 - pow(h.b1, t + 1.0));
}

// Global-norm clipping coefficient: max_grad_norm / max(norm, max_grad_norm).
G1F_HD float clip_coef(float norm, float max_grad_norm) {
  return max_grad_norm > 0.f ? max_grad_norm / (norm > max_grad_norm ? norm : max_grad_norm) : 1.f;
}

enum GradDtype : uint8_t { kGradF32 = 0, kGradF16 = 1, kGradBF16 = 2 };

#if defined(GPT1_FAST_WITH_CUDA) || defined(__CUDACC__)
// ---- CUDA launcher interface (implemented in openai_adam_cuda.cu; raw pointers only) ----------

// Elements per thread block; a tensor is cut into ceil(n / kCudaChunk) blocks.
constexpr int64_t kCudaChunk = 16384;

struct AdamTensorRef {
  float* p;
  const void* g;
  float* m;
  float* v;
  int64_t n;
  const float* step_ptr;  // device step counter (capturable), or nullptr: then `step` is used
  float step;
  GradDtype gdtype;
  bool decay;  // apply the l2 term
};

struct NormTensorRef {
  const void* g;
  int64_t n;
  GradDtype gdtype;
};

// Number of fp32 partial sums the norm launcher needs in `workspace`.
int64_t norm_workspace_size(const NormTensorRef* tensors, int n_tensors);

// out_norm[0] = sqrt(sum over all tensors of sum(g^2)), computed in fp32 per block and combined in
// fp64, deterministically (no atomics). Returns the first CUDA error, if any.
int launch_global_norm(const NormTensorRef* tensors, int n_tensors, float* workspace, float* out_norm,
                       void* stream);

// One OpenAI-Adam step over all `tensors` (one group's hyper-parameters). grad_norm: device pointer
// to the global gradient norm (nullptr = no clipping). Returns the first CUDA error, if any.
int launch_openai_adam(const AdamTensorRef* tensors, int n_tensors, const AdamHyper& hyper,
                       const float* grad_norm, void* stream);

// steps[i] += 1 for device step counters (after the update has read them, same stream).
int launch_increment_steps(float* const* steps, int n_steps, void* stream);

// The error string of a CUDA error code (for the torch-side binding, which has no cuda_runtime).
const char* cuda_error_string(int err);
#endif

}  // namespace gpt1_fast
