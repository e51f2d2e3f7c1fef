// The normals of the "philox" noise mode, as pnp_kernels/ops/philox.py specifies them.
//
// Element e of a sample takes its normal from the Philox4x32-10 call with counter
// (e / 4, 0, step, iteration): words (x0, x1) give elements 4j and 4j+1, words (x2, x3) give
// 4j+2 and 4j+3. Host and device code, so that the word-to-element mapping is checked on a CPU
// (tests/ops/test_cuda_philox.py) with the very functions the kernel calls.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

namespace pnp_kernels {
namespace philox {

// Philox4x32-10 constants (Salmon et al., SC'11), as in pnp_kernels/ops/philox.py.
constexpr uint32_t kM0 = 0xD2511F53u;
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;
constexpr uint32_t kW1 = 0xBB67AE85u;
constexpr int kRounds = 10;
constexpr float kTwoPi = 6.2831854820251465f;  // float32(2 pi), as philox.py

// Philox4x32-10 of counter (counter, 0, step, iteration) under key (k0, k1): all four words.
__host__ __device__ __forceinline__ uint4 words(uint32_t counter, uint32_t step, uint32_t iteration, uint32_t k0,
                                                uint32_t k1) {
  uint32_t c0 = counter, c1 = 0u, c2 = step, c3 = iteration;
#pragma unroll
  for (int round = 0; round < kRounds; ++round) {
    // One 32x32 -> 64-bit product gives both halves (a single wide multiply on the device).
    const uint64_t product0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t product1 = static_cast<uint64_t>(kM1) * c2;
    c0 = static_cast<uint32_t>(product1 >> 32) ^ c1 ^ k0;
    c1 = static_cast<uint32_t>(product1);
    c2 = static_cast<uint32_t>(product0 >> 32) ^ c3 ^ k1;
    c3 = static_cast<uint32_t>(product0);
    k0 += kW0;
    k1 += kW1;
  }
  return make_uint4(c0, c1, c2, c3);
}

// a * b rounded once: on the device, never contracted into the callee's multiply-adds.
__host__ __device__ __forceinline__ float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// Box-Muller of the word pair (a, b) in float32: (r cos t, r sin t). u1 and u2 are exact, the angle
// float32(2 pi) * u2 is rounded once; precise logf / sqrtf / sincosf (no fast math), so backends
// agree within a few float32 ulps.
__host__ __device__ __forceinline__ float2 box_muller(uint32_t a, uint32_t b) {
  const float u1 = static_cast<float>((a >> 8) + 1u) * 0x1p-24f;
  const float u2 = static_cast<float>(b >> 8) * 0x1p-24f;
  const float radius = sqrtf(-2.0f * logf(u1));
  float sine, cosine;
  sincosf(mul_rn(u2, kTwoPi), &sine, &cosine);
  return make_float2(radius * cosine, radius * sine);
}

// The normals of elements 4 * counter .. 4 * counter + 3: one call, every word used.
__host__ __device__ __forceinline__ float4 normals_of_call(uint32_t counter, uint32_t step, uint32_t iteration,
                                                           uint32_t k0, uint32_t k1) {
  const uint4 w = words(counter, step, iteration, k0, k1);
  const float2 first = box_muller(w.x, w.y);
  const float2 second = box_muller(w.z, w.w);
  return make_float4(first.x, first.y, second.x, second.y);
}

// Component `index` (0..3) of `v`, by selects: a run-time index into an array would put it in
// local memory.
__host__ __device__ __forceinline__ float component(const float4& v, uint32_t index) {
  return index == 0u ? v.x : index == 1u ? v.y : index == 2u ? v.z : v.w;
}

// The normals of the four elements first .. first + 3. When `first` is a multiple of four (every
// row of a latent whose F*H*W is) that is one call; otherwise they span two calls.
__host__ __device__ __forceinline__ float4 normals_from(uint32_t first, uint32_t step, uint32_t iteration,
                                                        uint32_t k0, uint32_t k1) {
  const float4 low = normals_of_call(first >> 2, step, iteration, k0, k1);
  const uint32_t shift = first & 3u;
  if (shift == 0u) return low;
  const float4 high = normals_of_call((first >> 2) + 1u, step, iteration, k0, k1);
  float picked[4];
#pragma unroll
  for (uint32_t k = 0; k < 4u; ++k) {
    const uint32_t slot = shift + k;  // 1 .. 6: into `low` below 4, into `high` from 4
    picked[k] = slot < 4u ? component(low, slot) : component(high, slot - 4u);
  }
  return make_float4(picked[0], picked[1], picked[2], picked[3]);
}

}  // namespace philox
}  // namespace pnp_kernels
