// The update's kernel instances for __nv_bfloat16 velocities (pnp_update_kernel.cuh); one translation unit
// per velocity dtype, so that a build compiles the three sets in parallel.
#include "pnp_update_kernel.cuh"

namespace pnp_kernels {

template <>
cudaError_t launch_pnp_update<VelocityDtype::kBFloat16>(const PnPUpdateParams& params, cudaStream_t stream) {
  return update::launch_for_velocity<__nv_bfloat16>(params, stream);
}

}  // namespace pnp_kernels
