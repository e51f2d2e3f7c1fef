// The update's kernel instances for float velocities (pnp_update_kernel.cuh); one translation unit
// per velocity dtype, so that a build compiles the three sets in parallel.
#include "pnp_update_kernel.cuh"

namespace pnp_kernels {

template <>
cudaError_t launch_pnp_update<VelocityDtype::kFloat32>(const PnPUpdateParams& params, cudaStream_t stream) {
  return update::launch_for_velocity<float>(params, stream);
}

}  // namespace pnp_kernels
