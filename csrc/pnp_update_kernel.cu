// Fused Predict-and-Perturb update: the CUDA kernel and its launcher.
//
// Computes exactly what pnp_kernels/ops/reference.py specifies. One thread owns one spatial
// position (f, h, w) of one sample and walks its channels, so the channel norm stays in
// registers and every latent element is read once from memory. Depends only on the CUDA
// toolkit: the torch binding lives in pnp_update_op.cpp.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "pnp_update_params.h"

namespace pnp_kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Philox4x32-10 constants (Salmon et al., SC'11), as in pnp_kernels/ops/philox.py.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;
constexpr float kTwoPi = 6.2831854820251465f;  // float32(2 pi), as philox.py

// Philox4x32-10 for counter (counter, 0, step, iteration): all four output words.
__device__ __forceinline__ uint4 philox_words(uint32_t counter, uint32_t step, uint32_t iteration, uint32_t k0,
                                              uint32_t k1) {
  uint32_t c0 = counter, c1 = 0u, c2 = step, c3 = iteration;
#pragma unroll
  for (int round = 0; round < kPhiloxRounds; ++round) {
    const uint32_t hi0 = __umulhi(kPhiloxM0, c0), lo0 = kPhiloxM0 * c0;
    const uint32_t hi1 = __umulhi(kPhiloxM1, c2), lo1 = kPhiloxM1 * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return make_uint4(c0, c1, c2, c3);
}

// Box-Muller of the word pair (a, b) in float32, as pnp_kernels/ops/philox.py: u1 and u2 are exact,
// the angle is float32(2 pi) * u2 rounded once; precise logf/sqrtf/sincosf (this file must not be
// built with fast math), so backends agree within a few float32 ulps.
__device__ __forceinline__ float2 box_muller(uint32_t a, uint32_t b) {
  const float u1 = static_cast<float>((a >> 8) + 1u) * 0x1p-24f;
  const float u2 = static_cast<float>(b >> 8) * 0x1p-24f;
  const float radius = sqrtf(-2.0f * logf(u1));
  float sine, cosine;
  sincosf(__fmul_rn(u2, kTwoPi), &sine, &cosine);
  return make_float2(radius * cosine, radius * sine);
}

// The normal of element `element` of a sample: one of the four its Philox call (element / 4) makes.
__device__ __forceinline__ float philox_normal(uint32_t element, uint32_t step, uint32_t iteration, uint32_t k0,
                                               uint32_t k1) {
  const uint4 words = philox_words(element >> 2, step, iteration, k0, k1);
  const bool second_pair = (element & 2u) != 0u;
  const float2 normals = box_muller(second_pair ? words.z : words.x, second_pair ? words.w : words.y);
  return (element & 1u) != 0u ? normals.y : normals.x;
}

__device__ __forceinline__ float to_float(float value) { return value; }
__device__ __forceinline__ float to_float(__half value) { return __half2float(value); }
__device__ __forceinline__ float to_float(__nv_bfloat16 value) { return __bfloat162float(value); }

// Explicitly rounded arithmetic: the reference rounds after every elementwise op, so no
// multiply-add may be contracted into an FMA where the outputs must match it bit for bit.
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }

// Adds this block's count of `flag` (one per thread) to *total with a single atomic.
__device__ __forceinline__ void add_block_count(bool flag, int* warp_counts, int32_t* total) {
  const unsigned votes = __ballot_sync(0xffffffffu, flag);
  if ((threadIdx.x & 31) == 0) warp_counts[threadIdx.x / 32] = __popc(votes);
  __syncthreads();
  if (threadIdx.x == 0) {
    int sum = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += warp_counts[w];
    if (sum != 0) atomicAdd(total, sum);
  }
}

// MAX_CHANNELS bounds the unrolled channel loops so that x0 / z_next stay in registers. The
// pointers of `p` come again as __restrict__ arguments: outputs never overlap inputs (the binding
// checks), which lets the compiler batch loads across channels and use the read-only cache.
template <typename VelocityT, int MAX_CHANNELS>
__global__ void __launch_bounds__(kThreads)
    pnp_update_kernel(const float* __restrict__ z, const VelocityT* __restrict__ v,
                      const VelocityT* __restrict__ v_uncond, const float* __restrict__ prev_x0,
                      const float* __restrict__ prev_z_next, const bool* __restrict__ prev_certain,
                      const float* __restrict__ noise, const int64_t* __restrict__ philox_keys,
                      const bool* __restrict__ active, float* __restrict__ x0_out, float* __restrict__ z_next_out,
                      bool* __restrict__ certain_out, int32_t* __restrict__ counts, float* __restrict__ z_perturbed_out,
                      float* __restrict__ uncertainty_out, const PnPUpdateParams p) {
  __shared__ int warp_counts[2][kWarps];
  const int64_t b = blockIdx.y;
  const int64_t position = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  bool certain = false;
  bool nonfinite = false;

  if (position < p.positions) {
    const int channels = static_cast<int>(p.channels);
    const int64_t base = b * p.channels * p.positions + position;  // element (b, 0, f, h, w)
    const int64_t mask_index = b * p.positions + position;        // element (b, f, h, w)
    const bool pinned = position / p.frame_size < p.num_pinned_frames;
    const bool is_active = active == nullptr || active[b];
    const bool has_prev = prev_x0 != nullptr;

    // Pass 1: prediction, Euler proposal and the channel norm of the change, all in registers.
    float x0[MAX_CHANNELS];
    float z_next[MAX_CHANNELS];
    float change = 0.0f;
    bool finite = true;
#pragma unroll
    for (int c = 0; c < MAX_CHANNELS; ++c) {
      if (c < channels) {
        const int64_t i = base + c * p.positions;
        const float z_value = z[i];
        float velocity = to_float(v[i]);
        if (v_uncond != nullptr) {
          const float uncond = to_float(v_uncond[i]);
          velocity = add(uncond, mul(p.guidance_scale, sub(velocity, uncond)));
        }
        x0[c] = sub(z_value, mul(p.sigma, velocity));
        z_next[c] = add(z_value, mul(p.dt, velocity));
        finite = finite && isfinite(x0[c]);
        if (has_prev) {
          const float d = sub(x0[c], prev_x0[i]);
          change = p.p_norm == 1 ? add(change, fabsf(d)) : add(change, mul(d, d));
        }
      }
    }
    nonfinite = !finite && !pinned && is_active;  // an inactive sample's model output is discarded

    float uncertainty = 0.0f;
    bool merge = false;  // take the previous iteration's x0 / z_next
    if (has_prev) {
      const bool was_certain = prev_certain != nullptr && prev_certain[mask_index];
      if (is_active) {
        const float norm = p.p_norm == 1 ? change : sqrtf(change);
        uncertainty = __fdiv_rn(norm, static_cast<float>(channels));
        certain = (uncertainty < p.tau || was_certain) && !pinned;
        merge = certain;
      } else {  // a sample that left the step keeps everything from its previous iteration
        certain = was_certain;
        merge = true;
      }
    }
    if (uncertainty_out != nullptr) {
      // Multiplied rather than selected, as in the reference (a NaN stays NaN on pinned frames).
      uncertainty_out[mask_index] = mul(uncertainty, pinned ? 0.0f : 1.0f);
    }
    if (certain_out != nullptr) certain_out[mask_index] = certain;

    // Pass 2: merge, pin, perturb and write.
    uint32_t k0 = 0u, k1 = 0u;
    if (philox_keys != nullptr) {
      k0 = static_cast<uint32_t>(philox_keys[2 * b]);
      k1 = static_cast<uint32_t>(philox_keys[2 * b + 1]);
    }
#pragma unroll
    for (int c = 0; c < MAX_CHANNELS; ++c) {
      if (c < channels) {
        const int64_t i = base + c * p.positions;
        float x0_value = x0[c], z_next_value = z_next[c];
        if (pinned) {
          x0_value = z_next_value = z[i];
        } else if (merge) {
          x0_value = prev_x0[i];
          z_next_value = prev_z_next[i];
        }
        if (x0_out != nullptr) x0_out[i] = x0_value;
        z_next_out[i] = z_next_value;
        if (z_perturbed_out != nullptr) {
          float perturbed = x0_value;  // pinned frames are never perturbed
          if (!pinned) {
            float eps;
            if (noise != nullptr) {
              eps = noise[i];
            } else {
              const uint32_t element = static_cast<uint32_t>(c * p.positions + position);
              eps = philox_normal(element, p.philox_step, p.philox_iteration, k0, k1);
            }
            perturbed = add(mul(p.one_minus_sigma, x0_value), mul(p.sigma, eps));
          }
          z_perturbed_out[i] = perturbed;
        }
      }
    }
  }

  // Every thread of the block takes part, including those past the last position.
  add_block_count(certain, warp_counts[0], counts + 2 * b);
  add_block_count(nonfinite, warp_counts[1], counts + 2 * b + 1);
}

template <typename VelocityT, int MAX_CHANNELS>
cudaError_t launch_typed(const PnPUpdateParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.positions + kThreads - 1) / kThreads), static_cast<unsigned>(p.batch));
  pnp_update_kernel<VelocityT, MAX_CHANNELS><<<grid, kThreads, 0, stream>>>(
      p.z, static_cast<const VelocityT*>(p.v), static_cast<const VelocityT*>(p.v_uncond), p.prev_x0, p.prev_z_next,
      p.prev_certain, p.noise, p.philox_keys, p.active, p.x0, p.z_next, p.certain, p.counts, p.z_perturbed,
      p.uncertainty, p);
  return cudaGetLastError();
}

// The smallest register budget that holds `channels` (Wan: 16, TI2V-5B: 48).
template <typename VelocityT>
cudaError_t launch_for_channels(const PnPUpdateParams& params, cudaStream_t stream) {
  if (params.channels <= 4) return launch_typed<VelocityT, 4>(params, stream);
  if (params.channels <= 16) return launch_typed<VelocityT, 16>(params, stream);
  if (params.channels <= 32) return launch_typed<VelocityT, 32>(params, stream);
  if (params.channels <= 48) return launch_typed<VelocityT, 48>(params, stream);
  return launch_typed<VelocityT, kMaxChannels>(params, stream);
}

}  // namespace

cudaError_t launch_pnp_update(const PnPUpdateParams& params, cudaStream_t stream) {
  if (params.channels < 1 || params.channels > kMaxChannels || params.batch > kMaxBatch ||
      params.positions / kThreads >= 0x7fffffff) {
    return cudaErrorInvalidValue;
  }
  const cudaError_t cleared =
      cudaMemsetAsync(params.counts, 0, static_cast<size_t>(params.batch) * 2 * sizeof(int32_t), stream);
  if (cleared != cudaSuccess || params.batch == 0 || params.positions == 0) return cleared;
  switch (params.velocity_dtype) {
    case VelocityDtype::kFloat32:
      return launch_for_channels<float>(params, stream);
    case VelocityDtype::kFloat16:
      return launch_for_channels<__half>(params, stream);
    case VelocityDtype::kBFloat16:
      return launch_for_channels<__nv_bfloat16>(params, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace pnp_kernels
