// What the CPU kernels of gpt1_fast::_C share: one binary fast on every x86-64 it runs on, and the
// float conversions written out so they vectorise inside those functions.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>

// Compiled for AVX-512, AVX2+FMA and baseline x86-64, picked at load time (target_clones). The clones
// cannot inline c10's helpers (out of line for them), hence the conversions below.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define G1F_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define G1F_CLONES
#endif
#define G1F_INLINE inline __attribute__((always_inline))

namespace gpt1_fast {

G1F_INLINE float f32_from_bits(uint32_t w) {
  float f;
  std::memcpy(&f, &w, sizeof f);
  return f;
}
G1F_INLINE uint32_t bits_from_f32(float f) {
  uint32_t w;
  std::memcpy(&w, &f, sizeof w);
  return w;
}
G1F_INLINE float widen(float x) { return x; }
G1F_INLINE float widen(c10::BFloat16 x) { return f32_from_bits(static_cast<uint32_t>(x.x) << 16); }
// float -> bf16 bits, rounded to nearest even (NaN kept a quiet NaN), as Tensor.to(torch.bfloat16)
G1F_INLINE uint16_t bf16_bits(float f) {
  const uint32_t w = bits_from_f32(f);
  const uint32_t rounded = (w + 0x7FFFu + ((w >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}

}  // namespace gpt1_fast
