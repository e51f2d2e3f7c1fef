// Arguments of one fused P&P update launch, as plain pointers and scalars.
//
// Shared by the kernel translation units (compiled by nvcc, CUDA headers only) and the torch
// binding (compiled by the host compiler against libtorch), so the kernel builds and is
// checked without torch's CUDA headers. Semantics: pnp_kernels/ops/reference.py.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace pnp_kernels {

// Channels of one position, spread over at most 8 lanes of a warp with 8 channels each.
constexpr int kMaxChannels = 64;
// Samples of one launch: the sample is the second grid axis.
constexpr int kMaxBatch = 65535;
// Words per sample of the statistics scratch: certain positions, non-finite positions, finished blocks.
constexpr int kStatWords = 3;

enum class VelocityDtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

struct PnPUpdateParams {
  // Inputs; latents are contiguous (B, C, F, H, W), masks contiguous (B, F, H, W).
  const float* z;
  const void* v;         // VelocityDtype elements: the velocity, or the conditional one
  const void* v_uncond;  // same dtype as v; nullptr without guidance fused in
  const float* prev_x0;  // nullptr at the first iteration (then prev_* and active are all nullptr)
  const float* prev_z_next;
  const bool* prev_certain;    // nullptr when the previous iteration had no mask
  const bool* active;          // (B,), or nullptr: every sample is active
  const float* noise;          // explicit N(0, 1) noise, or nullptr
  const int64_t* philox_keys;  // (B, 2) per-sample key words (k0, k1), or nullptr

  // Outputs. x0 and certain are nullptr when the caller does not keep the state (store_state).
  float* x0;
  float* z_next;
  bool* certain;
  float* certain_fraction;  // (B,)
  int32_t* nonfinite;       // (B,): positions with a non-finite x0
  float* z_perturbed;       // nullptr when no noise is given
  float* uncertainty;       // nullptr when not asked for
  uint32_t* stats;          // (B, kStatWords) scratch, zeroed before the launch

  int64_t batch;
  int64_t channels;
  int64_t positions;         // F * H * W
  int64_t pinned_positions;  // num_pinned_frames * H * W: the leading positions held at z
  float free_positions;      // max(positions - pinned_positions, 1), the certain fraction's divisor
  float guidance_scale;
  float sigma;
  float one_minus_sigma;  // 1 - sigma rounded once from float64, as the reference does
  float dt;               // sigma_next - sigma rounded once from float64
  float tau;
  int p_norm;  // 1 or 2
  uint32_t philox_step;
  uint32_t philox_iteration;
};

// Launches the update on `stream` for the velocity dtype kDtype (one translation unit each:
// pnp_update_fp32.cu, pnp_update_fp16.cu, pnp_update_bf16.cu); returns the launch status.
template <VelocityDtype kDtype>
cudaError_t launch_pnp_update(const PnPUpdateParams& params, cudaStream_t stream);

}  // namespace pnp_kernels
