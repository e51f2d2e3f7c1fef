// Fused Predict-and-Perturb update: the CUDA kernel template and its launcher.
//
// Computes exactly what pnp_kernels/ops/reference.py specifies. A thread owns four consecutive
// positions (f, h, w) of one sample, so every row access is one 16-byte vector where the layout is
// aligned (F*H*W a multiple of four, as every video latent is); otherwise the same thread loads its
// four elements one by one. The channels of those four positions are split over 1, 2, 4 or 8
// lanes of a warp, at most 8 channels each: the channel norm is summed by warp shuffles, and x0 /
// z_next stay in 64 registers at most whatever C, so nothing spills at C = 48 or 64. Feature flags
// (guidance, previous state, noise source, p-norm) are template parameters chosen once per launch
// (static_switch.h); the pointer of an optional output is tested per store, a uniform branch.
// Depends only on the CUDA toolkit: the torch binding lives in pnp_update_op.cpp.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "philox.cuh"
#include "pnp_update_params.h"
#include "static_switch.h"

namespace pnp_kernels {
namespace update {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
// Four blocks per SM (16 warps) caps ptxas at 128 registers; left free, it may pick fewer and spill.
constexpr int kMinBlocksPerSM = 4;
constexpr int kQuad = 4;             // positions per thread: one 16-byte float32 vector per row
constexpr int kChannelsPerLane = 8;  // kMaxChannels / the most lanes a group of positions uses
constexpr unsigned kFullWarp = 0xffffffffu;
static_assert(kChannelsPerLane * 8 == kMaxChannels, "eight lanes must hold the widest latent");

enum class NoiseMode { kNone, kTensor, kPhilox };

// How one launch maps threads to the latent (chosen by the launcher, uniform over the grid).
struct Layout {
  int channel_lanes_log2;  // log2 of the lanes sharing one group of four positions
  bool vector;             // rows and masks aligned for 16-byte (velocity: 4-element) accesses
};

// Explicitly rounded arithmetic: the reference rounds after every elementwise op, so no
// multiply-add may be contracted into an FMA where the outputs must match it bit for bit.
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }

__device__ __forceinline__ float to_float(float value) { return value; }
__device__ __forceinline__ float to_float(__half value) { return __half2float(value); }
__device__ __forceinline__ float to_float(__nv_bfloat16 value) { return __bfloat162float(value); }

// The 16-bit value in the low half of `bits` as float (exact).
template <typename T>
__device__ __forceinline__ float low_bits_to_float(uint32_t bits) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits & 0xffffu)));
  } else {
    return __uint_as_float(bits << 16);  // bfloat16 is the high half of a float32
  }
}

// Four consecutive elements of a row: one vector load when `full` (aligned, all in range), else
// the first `count` one by one and 0 for the rest.
__device__ __forceinline__ void load_quad(const float* __restrict__ row, bool full, int count, float (&out)[kQuad]) {
  if (full) {
    const float4 value = __ldg(reinterpret_cast<const float4*>(row));
    out[0] = value.x;
    out[1] = value.y;
    out[2] = value.z;
    out[3] = value.w;
    return;
  }
#pragma unroll
  for (int k = 0; k < kQuad; ++k) out[k] = k < count ? __ldg(row + k) : 0.0f;
}

template <typename T>
__device__ __forceinline__ void load_velocity(const T* __restrict__ row, bool full, int count, float (&out)[kQuad]) {
  if constexpr (std::is_same_v<T, float>) {
    load_quad(row, full, count, out);
  } else {
    if (full) {  // four 16-bit values: one 8-byte load
      const uint2 bits = __ldg(reinterpret_cast<const uint2*>(row));
      out[0] = low_bits_to_float<T>(bits.x);
      out[1] = low_bits_to_float<T>(bits.x >> 16);
      out[2] = low_bits_to_float<T>(bits.y);
      out[3] = low_bits_to_float<T>(bits.y >> 16);
      return;
    }
#pragma unroll
    for (int k = 0; k < kQuad; ++k) out[k] = k < count ? to_float(__ldg(row + k)) : 0.0f;
  }
}

__device__ __forceinline__ void store_quad(float* __restrict__ row, bool full, int count, const float (&in)[kQuad]) {
  if (full) {  // an explicit vector store: the optimizer may split a plain float4 assignment
    __stwb(reinterpret_cast<float4*>(row), make_float4(in[0], in[1], in[2], in[3]));
    return;
  }
#pragma unroll
  for (int k = 0; k < kQuad; ++k) {
    if (k < count) row[k] = in[k];
  }
}

// Per-position flags travel as bit masks: bit k is position k of the thread's four.
__device__ __forceinline__ uint32_t load_mask(const bool* __restrict__ mask, bool full, int count) {
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(mask);
  if (full) {
    const uchar4 value = __ldg(reinterpret_cast<const uchar4*>(bytes));
    return (value.x != 0) | (value.y != 0) << 1 | (value.z != 0) << 2 | (value.w != 0) << 3;
  }
  uint32_t bits = 0u;
#pragma unroll
  for (int k = 0; k < kQuad; ++k) {
    if (k < count && __ldg(bytes + k) != 0) bits |= 1u << k;
  }
  return bits;
}

__device__ __forceinline__ void store_mask(bool* __restrict__ mask, bool full, int count, uint32_t bits) {
  unsigned char* bytes = reinterpret_cast<unsigned char*>(mask);
  if (full) {
    __stwb(reinterpret_cast<uchar4*>(bytes), make_uchar4(bits & 1u, (bits >> 1) & 1u, (bits >> 2) & 1u, (bits >> 3) & 1u));
    return;
  }
#pragma unroll
  for (int k = 0; k < kQuad; ++k) {
    if (k < count) bytes[k] = (bits >> k) & 1u;
  }
}

__device__ __forceinline__ bool bit(uint32_t bits, int k) { return ((bits >> k) & 1u) != 0u; }

// Adds a block's counts (certain in the low, non-finite in the high 16 bits) to its sample's
// scratch; the sample's last block to finish writes certain_fraction and nonfinite from the totals.
__device__ __forceinline__ void add_block_counts(uint32_t counts, const PnPUpdateParams& p, int64_t b) {
  uint32_t* stats = p.stats + kStatWords * b;
  if ((counts & 0xffffu) != 0u) atomicAdd(stats, counts & 0xffffu);
  if ((counts >> 16) != 0u) atomicAdd(stats + 1, counts >> 16);
  __threadfence();  // the counts are visible before this block says it is done
  if (atomicAdd(stats + 2, 1u) == gridDim.x - 1) {
    const uint32_t certain = atomicAdd(stats, 0u);
    const uint32_t nonfinite = atomicAdd(stats + 1, 0u);
    p.certain_fraction[b] = __fdiv_rn(__uint2float_rn(certain), p.free_positions);
    p.nonfinite[b] = static_cast<int32_t>(nonfinite);
  }
}

// The pointers of `p` come again as __restrict__ arguments: outputs never overlap inputs (the
// binding checks), which lets the compiler batch loads across channels.
template <typename VelocityT, bool kGuided, bool kHasPrev, NoiseMode kNoise, int kPNorm>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM)
    pnp_update_kernel(const float* __restrict__ z, const VelocityT* __restrict__ v,
                      const VelocityT* __restrict__ v_uncond, const float* __restrict__ prev_x0,
                      const float* __restrict__ prev_z_next, const bool* __restrict__ prev_certain,
                      const bool* __restrict__ active, const float* __restrict__ noise,
                      float* __restrict__ x0_out, float* __restrict__ z_next_out, bool* __restrict__ certain_out,
                      float* __restrict__ z_perturbed_out, float* __restrict__ uncertainty_out,
                      const PnPUpdateParams p, const Layout layout) {
  // Lane = (channel lane, group): consecutive lanes take consecutive groups of four positions.
  const int lane = threadIdx.x & 31;
  const int lanes_log2 = layout.channel_lanes_log2;
  const int groups_log2 = 5 - lanes_log2;
  const int channel_lane = lane >> groups_log2;
  const int64_t group = ((static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32) << groups_log2) +
                        (lane & ((1 << groups_log2) - 1));
  const int64_t position = group * kQuad;
  const int64_t b = blockIdx.y;
  const int64_t positions = p.positions;
  const int64_t remaining = positions - position;
  const int count = remaining <= 0 ? 0 : remaining >= kQuad ? kQuad : static_cast<int>(remaining);
  const bool full = layout.vector && count == kQuad;
  const int channels = static_cast<int>(p.channels);
  const int64_t first_row = (b * channels + channel_lane) * positions + position;  // (b, channel_lane, position)
  const int64_t row_step = positions << lanes_log2;  // to this lane's next channel
  uint32_t pinned = 0u;
#pragma unroll
  for (int k = 0; k < kQuad; ++k) {
    if (position + k < p.pinned_positions) pinned |= 1u << k;
  }

  // Pass 1: prediction, Euler proposal and this lane's part of the channel norm, in registers.
  float x0[kChannelsPerLane][kQuad];
  float z_next[kChannelsPerLane][kQuad];
  float change[kQuad] = {0.0f, 0.0f, 0.0f, 0.0f};
  uint32_t nonfinite = 0u;
#pragma unroll
  for (int slot = 0; slot < kChannelsPerLane; ++slot) {
    if (channel_lane + (slot << lanes_log2) < channels) {
      const int64_t row = first_row + slot * row_step;
      float z_value[kQuad], velocity[kQuad];
      load_quad(z + row, full, count, z_value);
      load_velocity(v + row, full, count, velocity);
      if constexpr (kGuided) {
        float uncond[kQuad];
        load_velocity(v_uncond + row, full, count, uncond);
#pragma unroll
        for (int k = 0; k < kQuad; ++k) velocity[k] = add(uncond[k], mul(p.guidance_scale, sub(velocity[k], uncond[k])));
      }
#pragma unroll
      for (int k = 0; k < kQuad; ++k) {
        x0[slot][k] = sub(z_value[k], mul(p.sigma, velocity[k]));
        z_next[slot][k] = add(z_value[k], mul(p.dt, velocity[k]));
        if (!isfinite(x0[slot][k])) nonfinite |= 1u << k;
      }
      if constexpr (kHasPrev) {
        float previous[kQuad];
        load_quad(prev_x0 + row, full, count, previous);
#pragma unroll
        for (int k = 0; k < kQuad; ++k) {
          const float d = sub(x0[slot][k], previous[k]);
          change[k] = add(change[k], kPNorm == 1 ? fabsf(d) : mul(d, d));
        }
      }
#pragma unroll
      for (int k = 0; k < kQuad; ++k) {  // pinned frames keep z (after the norm, as the reference)
        if (bit(pinned, k)) x0[slot][k] = z_next[slot][k] = z_value[k];
      }
    }
  }
  // Every lane of a group ends with the same sums (a + b == b + a), hence the same decisions.
  for (int offset = 1 << groups_log2; offset < 32; offset <<= 1) {
    if constexpr (kHasPrev) {
#pragma unroll
      for (int k = 0; k < kQuad; ++k) change[k] = add(change[k], __shfl_xor_sync(kFullWarp, change[k], offset));
    }
    nonfinite |= __shfl_xor_sync(kFullWarp, nonfinite, offset);
  }

  const bool is_active = active == nullptr || active[b];
  const int64_t mask_row = b * positions + position;
  uint32_t certain = 0u, merge = 0u;  // merge: take the previous iteration's x0 / z_next
  float uncertainty[kQuad] = {0.0f, 0.0f, 0.0f, 0.0f};
  if constexpr (kHasPrev) {
    const uint32_t was_certain = prev_certain != nullptr && count > 0 ? load_mask(prev_certain + mask_row, full, count) : 0u;
    if (is_active) {
#pragma unroll
      for (int k = 0; k < kQuad; ++k) {
        const float norm = kPNorm == 1 ? change[k] : sqrtf(change[k]);
        uncertainty[k] = __fdiv_rn(norm, static_cast<float>(channels));
        if ((uncertainty[k] < p.tau || bit(was_certain, k)) && !bit(pinned, k)) certain |= 1u << k;
      }
      merge = certain;
    } else {  // a sample that left the step keeps everything from its previous iteration
      certain = was_certain;
      merge = (1u << kQuad) - 1u;
    }
  }
  const uint32_t in_range = (1u << count) - 1u;
  certain &= in_range;
  merge &= ~pinned;                                            // pinned positions keep z
  nonfinite = is_active ? nonfinite & ~pinned & in_range : 0u;  // an inactive sample's output is discarded
  const bool counting_lane = channel_lane == 0 && count > 0;
  if (counting_lane) {
    if (certain_out != nullptr) store_mask(certain_out + mask_row, full, count, certain);
    if (uncertainty_out != nullptr) {
      float written[kQuad];  // a product, not a select, as the reference: NaN stays NaN when pinned
#pragma unroll
      for (int k = 0; k < kQuad; ++k) written[k] = mul(uncertainty[k], bit(pinned, k) ? 0.0f : 1.0f);
      store_quad(uncertainty_out + mask_row, full, count, written);
    }
  }

  // Pass 2: merge, perturb and write.
  if (count > 0) {
    uint32_t k0 = 0u, k1 = 0u;
    if constexpr (kNoise == NoiseMode::kPhilox) {
      k0 = static_cast<uint32_t>(p.philox_keys[2 * b]);
      k1 = static_cast<uint32_t>(p.philox_keys[2 * b + 1]);
    }
#pragma unroll
    for (int slot = 0; slot < kChannelsPerLane; ++slot) {
      const int channel = channel_lane + (slot << lanes_log2);
      if (channel < channels) {
        const int64_t row = first_row + slot * row_step;
        if constexpr (kHasPrev) {
          if (merge != 0u) {  // read only where some position is taken
            float taken_x0[kQuad], taken_z_next[kQuad];
            load_quad(prev_x0 + row, full, count, taken_x0);
            load_quad(prev_z_next + row, full, count, taken_z_next);
#pragma unroll
            for (int k = 0; k < kQuad; ++k) {
              if (bit(merge, k)) {
                x0[slot][k] = taken_x0[k];
                z_next[slot][k] = taken_z_next[k];
              }
            }
          }
        }
        if (x0_out != nullptr) store_quad(x0_out + row, full, count, x0[slot]);
        store_quad(z_next_out + row, full, count, z_next[slot]);
        if constexpr (kNoise != NoiseMode::kNone) {
          float eps[kQuad];
          if constexpr (kNoise == NoiseMode::kTensor) {
            load_quad(noise + row, full, count, eps);
          } else {  // aligned rows: the four elements are exactly one Philox call
            const uint32_t element = static_cast<uint32_t>(channel * positions + position);
            const float4 normals = philox::normals_from(element, p.philox_step, p.philox_iteration, k0, k1);
            eps[0] = normals.x;
            eps[1] = normals.y;
            eps[2] = normals.z;
            eps[3] = normals.w;
          }
          float perturbed[kQuad];
#pragma unroll
          for (int k = 0; k < kQuad; ++k) {  // pinned frames are never perturbed
            perturbed[k] = bit(pinned, k) ? x0[slot][k] : add(mul(p.one_minus_sigma, x0[slot][k]), mul(p.sigma, eps[k]));
          }
          store_quad(z_perturbed_out + row, full, count, perturbed);
        }
      }
    }
  }

  // Every thread of the block takes part, including those past the last position.
  uint32_t counts = counting_lane ? __popc(certain) | (__popc(nonfinite) << 16) : 0u;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) counts += __shfl_xor_sync(kFullWarp, counts, offset);
  __shared__ uint32_t warp_counts[kWarps];
  if (lane == 0) warp_counts[threadIdx.x / 32] = counts;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t block_counts = 0u;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) block_counts += warp_counts[w];  // at most 512 per field
    add_block_counts(block_counts, p, b);
  }
}

__host__ inline bool aligned(const void* pointer, size_t bytes) {
  return reinterpret_cast<uintptr_t>(pointer) % bytes == 0;  // nullptr is aligned
}

// The fewest channel lanes that hold C with kChannelsPerLane each; 16-byte accesses when every
// row and mask of every tensor starts aligned (then each thread's four positions are too).
template <typename VelocityT>
Layout layout_for(const PnPUpdateParams& p) {
  int lanes_log2 = 0;
  while ((kChannelsPerLane << lanes_log2) < p.channels) ++lanes_log2;
  const size_t velocity_bytes = kQuad * sizeof(VelocityT);
  bool vector = p.positions % kQuad == 0 && aligned(p.v, velocity_bytes) && aligned(p.v_uncond, velocity_bytes) &&
                aligned(p.prev_certain, kQuad) && aligned(p.certain, kQuad);
  for (const void* rows : {static_cast<const void*>(p.z), static_cast<const void*>(p.prev_x0),
                           static_cast<const void*>(p.prev_z_next), static_cast<const void*>(p.noise),
                           static_cast<const void*>(p.x0), static_cast<const void*>(p.z_next),
                           static_cast<const void*>(p.z_perturbed), static_cast<const void*>(p.uncertainty)}) {
    vector = vector && aligned(rows, kQuad * sizeof(float));
  }
  return Layout{lanes_log2, vector};
}

template <typename VelocityT, bool kGuided, bool kHasPrev, NoiseMode kNoise, int kPNorm>
cudaError_t launch_instance(const PnPUpdateParams& p, const Layout& layout, cudaStream_t stream) {
  const int64_t positions_per_block = (kThreads * kQuad) >> layout.channel_lanes_log2;
  const dim3 grid(static_cast<unsigned>((p.positions + positions_per_block - 1) / positions_per_block),
                  static_cast<unsigned>(p.batch));
  pnp_update_kernel<VelocityT, kGuided, kHasPrev, kNoise, kPNorm><<<grid, kThreads, 0, stream>>>(
      p.z, static_cast<const VelocityT*>(p.v), static_cast<const VelocityT*>(p.v_uncond), p.prev_x0, p.prev_z_next,
      p.prev_certain, p.active, p.noise, p.x0, p.z_next, p.certain, p.z_perturbed, p.uncertainty, p, layout);
  return cudaGetLastError();
}

// The instances: guidance x noise source x (no previous iteration, or one with p = 1 or 2), the
// combinations the sampler issues: 18 per velocity dtype.
template <typename VelocityT>
cudaError_t launch_for_velocity(const PnPUpdateParams& p, cudaStream_t stream) {
  if (p.channels < 1 || p.channels > kMaxChannels || p.batch > kMaxBatch || p.positions > (int64_t{1} << 32)) {
    return cudaErrorInvalidValue;
  }
  if (p.batch == 0 || p.positions == 0) return cudaSuccess;
  const Layout layout = layout_for<VelocityT>(p);
  const NoiseMode noise = p.philox_keys != nullptr ? NoiseMode::kPhilox
                          : p.noise != nullptr     ? NoiseMode::kTensor
                                                   : NoiseMode::kNone;
  return PNP_BOOL_SWITCH(p.v_uncond != nullptr, kGuided, [&] {
    return PNP_ENUM_SWITCH3(noise, NoiseMode, kTensor, kPhilox, kNone, kNoise, [&] {
      if (p.prev_x0 == nullptr) {  // no previous iteration, no norm: one p-norm suffices
        return launch_instance<VelocityT, kGuided, false, kNoise, 1>(p, layout, stream);
      }
      return PNP_BOOL_SWITCH(p.p_norm == 2, kEuclidean, [&] {
        return launch_instance<VelocityT, kGuided, true, kNoise, kEuclidean ? 2 : 1>(p, layout, stream);
      });
    });
  });
}

}  // namespace update
}  // namespace pnp_kernels
