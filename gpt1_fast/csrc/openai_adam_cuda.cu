// Fused OpenAI-Adam, CUDA kernels + launchers (raw pointers; no torch headers, see openai_adam.h).
//
// Multi-tensor apply: a launch takes up to kMaxTensors tensors, their pointers passed by value in
// the kernel's parameter block (__grid_constant__, no device-side table to upload); every thread
// block owns one kCudaChunk-element chunk of one tensor and finds its tensor by binary search over
// the launch's block offsets. Accesses are 16 bytes wide (float4; 8 bytes for fp16/bf16 grads)
// whenever the chunk's pointers are aligned, scalar otherwise.
//
// The global gradient norm is reduced on the device (per-block fp32 partial sums, combined in fp64
// by one block, deterministic) and the update kernel reads it from device memory: nothing in a step
// waits on the host, so a step can be captured in a CUDA graph. With device step counters
// (step_ptr), the step size lrt is also computed on the device from the counter.
#include "openai_adam.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

namespace gpt1_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxTensors = 64;
constexpr int kIlp = 4;  // float4 groups each thread has in flight per array

struct AdamArgs {
  float* p[kMaxTensors];
  const void* g[kMaxTensors];
  float* m[kMaxTensors];
  float* v[kMaxTensors];
  const float* step_ptr[kMaxTensors];
  int64_t n[kMaxTensors];
  float step[kMaxTensors];
  int block_start[kMaxTensors + 1];
  uint8_t gdtype[kMaxTensors];
  uint8_t decay[kMaxTensors];
  int n_tensors;
};

struct NormArgs {
  const void* g[kMaxTensors];
  int64_t n[kMaxTensors];
  int block_start[kMaxTensors + 1];
  uint8_t gdtype[kMaxTensors];
  int n_tensors;
  int partial_offset;
};

// Kernel parameters must stay under the classic 4 KB limit (no reliance on CUDA 12.1's 32 KB).
static_assert(sizeof(AdamArgs) + sizeof(AdamHyper) + sizeof(void*) <= 4000, "AdamArgs too large");
static_assert(sizeof(NormArgs) <= 4000, "NormArgs too large");

// ---- grad loads: 4 consecutive elements as fp32 ----------------------------------------------
template <typename T>
struct Grad;

template <>
struct Grad<float> {
  static __device__ __forceinline__ float4 load4(const float* g) { return __ldg(reinterpret_cast<const float4*>(g)); }
  static __device__ __forceinline__ float load1(const float* g) { return __ldg(g); }
};

template <>
struct Grad<__half> {
  static __device__ __forceinline__ float4 load4(const __half* g) {
    const uint2 raw = __ldg(reinterpret_cast<const uint2*>(g));
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
    return make_float4(a.x, a.y, b.x, b.y);
  }
  static __device__ __forceinline__ float load1(const __half* g) { return __half2float(g[0]); }
};

template <>
struct Grad<__nv_bfloat16> {
  static __device__ __forceinline__ float4 load4(const __nv_bfloat16* g) {
    const uint2 raw = __ldg(reinterpret_cast<const uint2*>(g));
    // bf16 -> fp32 is a 16-bit shift.
    return make_float4(__uint_as_float(raw.x << 16), __uint_as_float(raw.x & 0xffff0000u),
                       __uint_as_float(raw.y << 16), __uint_as_float(raw.y & 0xffff0000u));
  }
  static __device__ __forceinline__ float load1(const __nv_bfloat16* g) { return __bfloat162float(g[0]); }
};

__device__ __forceinline__ bool aligned(const void* ptr, int bytes) {
  return (reinterpret_cast<uintptr_t>(ptr) % bytes) == 0;
}

// ---- update --------------------------------------------------------------------------------
struct StepScalars {
  float lrt, coef, b1, omb1, b2, omb2, eps, l2;
};

__device__ __forceinline__ void adam_elem(float& p, float g, float& m, float& v, const StepScalars& s,
                                          bool decay) {
  g *= s.coef;
  // Same operation order as the multi-tensor reference in opt.py.
  m = m * s.b1 + s.omb1 * g;
  v = v * s.b2 + s.omb2 * g * g;
  float upd = m / (sqrtf(v) + s.eps);
  if (decay) upd += s.l2 * p;
  p = p - s.lrt * upd;
}

template <typename GT>
__device__ __forceinline__ void adam_chunk(float* __restrict__ p, const GT* __restrict__ g, float* __restrict__ m,
                                           float* __restrict__ v, int len, const StepScalars& s, bool decay) {
  int head = 0;  // elements done by the vector path
  if (aligned(p, 16) && aligned(m, 16) && aligned(v, 16) && aligned(g, 4 * sizeof(GT))) {
    const int nvec = len / 4;
    float4* p4 = reinterpret_cast<float4*>(p);
    float4* m4 = reinterpret_cast<float4*>(m);
    float4* v4 = reinterpret_cast<float4*>(v);
    for (int base = threadIdx.x; base < nvec; base += kThreads * kIlp) {
      float4 rp[kIlp], rg[kIlp], rm[kIlp], rv[kIlp];
#pragma unroll
      for (int k = 0; k < kIlp; ++k) {  // all loads first: kIlp x 4 independent 16-byte loads in flight
        const int i = base + k * kThreads;
        if (i < nvec) {
          rp[k] = p4[i];
          rg[k] = Grad<GT>::load4(g + 4 * i);
          rm[k] = m4[i];
          rv[k] = v4[i];
        }
      }
#pragma unroll
      for (int k = 0; k < kIlp; ++k) {
        const int i = base + k * kThreads;
        if (i < nvec) {
          adam_elem(rp[k].x, rg[k].x, rm[k].x, rv[k].x, s, decay);
          adam_elem(rp[k].y, rg[k].y, rm[k].y, rv[k].y, s, decay);
          adam_elem(rp[k].z, rg[k].z, rm[k].z, rv[k].z, s, decay);
          adam_elem(rp[k].w, rg[k].w, rm[k].w, rv[k].w, s, decay);
          p4[i] = rp[k];
          m4[i] = rm[k];
          v4[i] = rv[k];
        }
      }
    }
    head = nvec * 4;
  }
  for (int i = head + threadIdx.x; i < len; i += kThreads) {
    float pi = p[i], mi = m[i], vi = v[i];
    adam_elem(pi, Grad<GT>::load1(g + i), mi, vi, s, decay);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

// Index of the tensor that owns block b: the last t with block_start[t] <= b (empty tensors are
// never in a launch, so block_start is strictly increasing).
__device__ __forceinline__ int find_tensor(const int* block_start, int n_tensors, int b) {
  int lo = 0, hi = n_tensors - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (block_start[mid] <= b) lo = mid; else hi = mid - 1;
  }
  return lo;
}

__global__ void __launch_bounds__(kThreads) openai_adam_kernel(const __grid_constant__ AdamArgs a,
                                                               const AdamHyper h, const float* grad_norm) {
  __shared__ int s_tensor;
  __shared__ float s_lrt, s_coef;
  if (threadIdx.x == 0) {
    const int t = find_tensor(a.block_start, a.n_tensors, blockIdx.x);
    s_tensor = t;
    const float step = a.step_ptr[t] != nullptr ? *a.step_ptr[t] : a.step[t];
    s_lrt = static_cast<float>(openai_adam_lrt(static_cast<double>(step), h));
    s_coef = grad_norm != nullptr ? clip_coef(*grad_norm, h.max_grad_norm) : 1.f;
  }
  __syncthreads();
  const int t = s_tensor;
  const StepScalars s{s_lrt, s_coef, static_cast<float>(h.b1), static_cast<float>(1.0 - h.b1),
                      static_cast<float>(h.b2), static_cast<float>(1.0 - h.b2), h.eps, h.l2};
  const int64_t begin = static_cast<int64_t>(blockIdx.x - a.block_start[t]) * kCudaChunk;
  const int len = static_cast<int>(a.n[t] - begin < kCudaChunk ? a.n[t] - begin : kCudaChunk);
  const bool decay = a.decay[t] != 0;
  float* p = a.p[t] + begin;
  float* m = a.m[t] + begin;
  float* v = a.v[t] + begin;
  switch (a.gdtype[t]) {
    case kGradF32: adam_chunk(p, static_cast<const float*>(a.g[t]) + begin, m, v, len, s, decay); break;
    case kGradF16: adam_chunk(p, static_cast<const __half*>(a.g[t]) + begin, m, v, len, s, decay); break;
    default: adam_chunk(p, static_cast<const __nv_bfloat16*>(a.g[t]) + begin, m, v, len, s, decay); break;
  }
}

// ---- global norm ---------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ T block_sum(T x, T* smem /* >= 32 */) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) smem[warp] = x;
  __syncthreads();
  x = threadIdx.x < blockDim.x / 32 ? smem[lane] : T(0);
  if (warp == 0) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  }
  return x;  // valid in thread 0
}

template <typename GT>
__device__ __forceinline__ float sumsq_chunk(const GT* __restrict__ g, int len) {
  float acc[kIlp] = {};
  int head = 0;
  if (aligned(g, 4 * sizeof(GT))) {
    const int nvec = len / 4;
    for (int base = threadIdx.x; base < nvec; base += kThreads * kIlp) {
      float4 r[kIlp];
#pragma unroll
      for (int k = 0; k < kIlp; ++k) {
        const int i = base + k * kThreads;
        r[k] = i < nvec ? Grad<GT>::load4(g + 4 * i) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int k = 0; k < kIlp; ++k)
        acc[k] += r[k].x * r[k].x + r[k].y * r[k].y + r[k].z * r[k].z + r[k].w * r[k].w;
    }
    head = nvec * 4;
  }
  for (int i = head + threadIdx.x; i < len; i += kThreads) {
    const float x = Grad<GT>::load1(g + i);
    acc[0] += x * x;
  }
  float total = 0.f;
#pragma unroll
  for (int k = 0; k < kIlp; ++k) total += acc[k];
  return total;
}

__global__ void __launch_bounds__(kThreads) sumsq_kernel(const __grid_constant__ NormArgs a, float* partial) {
  __shared__ float smem[32];
  const int t = find_tensor(a.block_start, a.n_tensors, blockIdx.x);
  const int64_t begin = static_cast<int64_t>(blockIdx.x - a.block_start[t]) * kCudaChunk;
  const int len = static_cast<int>(a.n[t] - begin < kCudaChunk ? a.n[t] - begin : kCudaChunk);
  float s;
  switch (a.gdtype[t]) {
    case kGradF32: s = sumsq_chunk(static_cast<const float*>(a.g[t]) + begin, len); break;
    case kGradF16: s = sumsq_chunk(static_cast<const __half*>(a.g[t]) + begin, len); break;
    default: s = sumsq_chunk(static_cast<const __nv_bfloat16*>(a.g[t]) + begin, len); break;
  }
  s = block_sum(s, smem);
  if (threadIdx.x == 0) partial[a.partial_offset + blockIdx.x] = s;
}

constexpr int kFinalThreads = 1024;

__global__ void __launch_bounds__(kFinalThreads) norm_finalize_kernel(const float* partial, int n, float* out) {
  __shared__ double smem[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += kFinalThreads) acc += partial[i];
  acc = block_sum(acc, smem);
  if (threadIdx.x == 0) out[0] = static_cast<float>(sqrt(acc));
}

// ---- step counters ---------------------------------------------------------------------------
constexpr int kMaxSteps = 256;
struct StepArgs {
  float* step[kMaxSteps];
  int n;
};

__global__ void increment_steps_kernel(const __grid_constant__ StepArgs a) {
  if (threadIdx.x < a.n) a.step[threadIdx.x][0] += 1.f;
}

int64_t blocks_of(int64_t n) { return (n + kCudaChunk - 1) / kCudaChunk; }

// Packs tensors [i, ...) into one launch: stops at kMaxTensors or when the block count would pass
// INT_MAX / 2. Skips empty tensors. Returns the index after the last packed tensor.
template <typename Ref, typename Fill>
int pack(const Ref* refs, int n_refs, int i, int* block_start, int* n_packed, Fill fill) {
  int count = 0;
  int64_t blocks = 0;
  for (; i < n_refs && count < kMaxTensors; ++i) {
    if (refs[i].n == 0) continue;
    const int64_t b = blocks_of(refs[i].n);
    if (count > 0 && blocks + b > (int64_t{1} << 30)) break;
    block_start[count] = static_cast<int>(blocks);
    fill(count, refs[i]);
    blocks += b;
    ++count;
  }
  block_start[count] = static_cast<int>(blocks);
  *n_packed = count;
  return i;
}

}  // namespace

int64_t norm_workspace_size(const NormTensorRef* tensors, int n_tensors) {
  int64_t total = 0;
  for (int i = 0; i < n_tensors; ++i) total += blocks_of(tensors[i].n);
  return std::max<int64_t>(total, 1);
}

int launch_global_norm(const NormTensorRef* tensors, int n_tensors, float* workspace, float* out_norm,
                       void* stream_) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  int offset = 0;
  for (int i = 0; i < n_tensors;) {
    NormArgs a{};
    i = pack(tensors, n_tensors, i, a.block_start, &a.n_tensors, [&](int k, const NormTensorRef& r) {
      a.g[k] = r.g;
      a.n[k] = r.n;
      a.gdtype[k] = r.gdtype;
    });
    if (a.n_tensors == 0) break;
    a.partial_offset = offset;
    sumsq_kernel<<<a.block_start[a.n_tensors], kThreads, 0, stream>>>(a, workspace);
    if (cudaError_t e = cudaGetLastError()) return e;
    offset += a.block_start[a.n_tensors];
  }
  norm_finalize_kernel<<<1, kFinalThreads, 0, stream>>>(workspace, offset, out_norm);
  return cudaGetLastError();
}

int launch_openai_adam(const AdamTensorRef* tensors, int n_tensors, const AdamHyper& hyper,
                       const float* grad_norm, void* stream_) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  for (int i = 0; i < n_tensors;) {
    AdamArgs a{};
    i = pack(tensors, n_tensors, i, a.block_start, &a.n_tensors, [&](int k, const AdamTensorRef& r) {
      a.p[k] = r.p;
      a.g[k] = r.g;
      a.m[k] = r.m;
      a.v[k] = r.v;
      a.n[k] = r.n;
      a.step_ptr[k] = r.step_ptr;
      a.step[k] = r.step;
      a.gdtype[k] = r.gdtype;
      a.decay[k] = r.decay;
    });
    if (a.n_tensors == 0) break;
    openai_adam_kernel<<<a.block_start[a.n_tensors], kThreads, 0, stream>>>(a, hyper, grad_norm);
    if (cudaError_t e = cudaGetLastError()) return e;
  }
  return cudaSuccess;
}

int launch_increment_steps(float* const* steps, int n_steps, void* stream_) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  for (int i = 0; i < n_steps; i += kMaxSteps) {
    StepArgs a{};
    a.n = std::min(kMaxSteps, n_steps - i);
    for (int k = 0; k < a.n; ++k) a.step[k] = steps[i + k];
    increment_steps_kernel<<<1, kMaxSteps, 0, stream>>>(a);
    if (cudaError_t e = cudaGetLastError()) return e;
  }
  return cudaSuccess;
}

const char* cuda_error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

}  // namespace gpt1_fast
