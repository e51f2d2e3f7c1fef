// Torch binding of the fused P&P update: registers pnp_kernels::pnp_update_cuda.
//
// Validates every tensor (device, dtype, shape, contiguity) before handing raw pointers to the
// kernel of pnp_update_kernel.cuh. TORCH_LIBRARY_FRAGMENT rather than TORCH_LIBRARY: the namespace
// is shared with the Python ops of pnp_kernels (torch.library), and only one block per process
// may claim a namespace as its definition; a fragment never clashes with it.
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "pnp_update_params.h"

namespace pnp_kernels {
namespace {

// Each check names the argument; TORCH_CHECK_VALUE / _TYPE surface as ValueError / TypeError.
#define PNP_CHECK_DEVICE(t, z) \
  TORCH_CHECK_VALUE((t).device() == (z).device(), #t " must be on ", (z).device(), " like z, got ", (t).device())
#define PNP_CHECK_DTYPE(t, dtype) \
  TORCH_CHECK_TYPE((t).scalar_type() == (dtype), #t " must have dtype ", (dtype), ", got ", (t).scalar_type())
#define PNP_CHECK_SHAPE(t, shape) \
  TORCH_CHECK_VALUE((t).sizes() == (shape), #t " must have shape ", (shape), ", got ", (t).sizes())
#define PNP_CHECK_CONTIGUOUS(t) TORCH_CHECK_VALUE((t).is_contiguous(), #t " must be contiguous")
#define PNP_CHECK_LAYOUT(t, z, shape) \
  do {                                \
    PNP_CHECK_DEVICE(t, z);           \
    PNP_CHECK_SHAPE(t, shape);        \
    PNP_CHECK_CONTIGUOUS(t);          \
  } while (0)
#define PNP_CHECK_TENSOR(t, z, dtype, shape) \
  do {                                       \
    PNP_CHECK_DTYPE(t, dtype);               \
    PNP_CHECK_LAYOUT(t, z, shape);           \
  } while (0)

// Byte ranges of two contiguous tensors intersect.
bool overlaps(const at::Tensor& a, const at::Tensor& b) {
  const char* a_begin = static_cast<const char*>(a.const_data_ptr());
  const char* b_begin = static_cast<const char*>(b.const_data_ptr());
  return a.nbytes() > 0 && b.nbytes() > 0 && a_begin < b_begin + b.nbytes() && b_begin < a_begin + a.nbytes();
}

using NamedTensors = std::vector<std::pair<const char*, const std::optional<at::Tensor>*>>;

// The kernel reads inputs through __restrict__ pointers: no output may share memory with an
// input or with another output.
void check_no_overlap(const NamedTensors& outputs, const NamedTensors& inputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& [name, out] = outputs[i];
    if (!out->has_value()) continue;
    for (const auto& [other_name, other] : inputs) {
      TORCH_CHECK_VALUE(!other->has_value() || !overlaps(**out, **other), name, " must not overlap ", other_name);
    }
    for (size_t j = i + 1; j < outputs.size(); ++j) {
      const auto& [other_name, other] = outputs[j];
      TORCH_CHECK_VALUE(!other->has_value() || !overlaps(**out, **other), name, " must not overlap ", other_name);
    }
  }
}

template <typename T>
const T* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<T>() : nullptr;
}

template <typename T>
T* mutable_data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->mutable_data_ptr<T>() : nullptr;
}

// The arguments of the Python op pnp_kernels::pnp_update (pnp_kernels/ops/custom_op.py), in its
// order, except that philox noise comes as the (B, 2) int64 key table of PhiloxNoise.key_table
// (a device tensor: no copy per call) and that backend / round_products_to are left out (this op
// is one backend; it never rounds products). The mapping: cuda_op_arguments in cuda_backend.py.
void pnp_update_cuda(const at::Tensor& z, const at::Tensor& v, const std::optional<at::Tensor>& v_uncond,
                     const std::optional<at::Tensor>& prev_x0, const std::optional<at::Tensor>& prev_z_next,
                     const std::optional<at::Tensor>& prev_certain, const std::optional<at::Tensor>& active,
                     const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& philox_keys,
                     int64_t philox_step, int64_t philox_iteration, double sigma, double sigma_next,
                     double guidance_scale, double tau, int64_t p_norm, int64_t num_pinned_frames,
                     const std::optional<at::Tensor>& x0, const at::Tensor& z_next,
                     const std::optional<at::Tensor>& certain, const at::Tensor& certain_fraction,
                     const at::Tensor& nonfinite, const std::optional<at::Tensor>& z_perturbed,
                     const std::optional<at::Tensor>& uncertainty) {
  TORCH_CHECK_VALUE(z.is_cuda(), "z must be a CUDA tensor, got ", z.device());
  TORCH_CHECK_VALUE(z.dim() == 5, "z must have shape (B, C, F, H, W), got ", z.sizes());
  const at::IntArrayRef latent_shape = z.sizes();
  const int64_t batch = z.size(0), channels = z.size(1), frames = z.size(2);
  const std::vector<int64_t> mask_dims = {batch, frames, z.size(3), z.size(4)};
  const std::vector<int64_t> pair_dims = {batch, 2};
  const at::IntArrayRef mask_shape(mask_dims), pair_shape(pair_dims), batch_shape(batch);

  PNP_CHECK_DTYPE(z, at::kFloat);
  PNP_CHECK_CONTIGUOUS(z);
  TORCH_CHECK_VALUE(channels >= 1 && channels <= kMaxChannels, "z must have 1 to ", kMaxChannels,
                    " channels, got ", channels);
  TORCH_CHECK_VALUE(batch <= kMaxBatch, "z must have at most ", kMaxBatch, " samples, got ", batch);
  TORCH_CHECK_VALUE(z.numel() / std::max<int64_t>(batch, 1) <= (int64_t{1} << 32),
                    "z must have at most 2**32 elements per sample, got ", z.sizes());
  const at::ScalarType v_dtype = v.scalar_type();
  TORCH_CHECK_TYPE(v_dtype == at::kFloat || v_dtype == at::kHalf || v_dtype == at::kBFloat16,
                   "v must have dtype float32, float16 or bfloat16, got ", v_dtype);
  PNP_CHECK_LAYOUT(v, z, latent_shape);
  if (v_uncond) {
    PNP_CHECK_TENSOR(*v_uncond, z, v_dtype, latent_shape);
  }
  TORCH_CHECK_VALUE(prev_x0.has_value() == prev_z_next.has_value(), "prev_x0 and prev_z_next must be given together");
  TORCH_CHECK_VALUE(prev_x0 || (!prev_certain && !active), "prev_certain and active need prev_x0 and prev_z_next");
  if (prev_x0) {
    PNP_CHECK_TENSOR(*prev_x0, z, at::kFloat, latent_shape);
    PNP_CHECK_TENSOR(*prev_z_next, z, at::kFloat, latent_shape);
  }
  if (prev_certain) {
    PNP_CHECK_TENSOR(*prev_certain, z, at::kBool, mask_shape);
  }
  if (active) {
    PNP_CHECK_TENSOR(*active, z, at::kBool, batch_shape);
  }
  TORCH_CHECK_VALUE(p_norm == 1 || p_norm == 2, "p_norm must be 1 or 2, got ", p_norm);
  TORCH_CHECK_VALUE(num_pinned_frames >= 0 && num_pinned_frames < frames, "num_pinned_frames must be in [0, F=",
                    frames, "), got ", num_pinned_frames);
  TORCH_CHECK_VALUE(!(noise && philox_keys), "give either noise or philox_keys, not both");
  TORCH_CHECK_VALUE(z_perturbed.has_value() == (noise || philox_keys),
                    "z_perturbed must be given exactly when noise or philox_keys is");
  if (noise) {
    PNP_CHECK_TENSOR(*noise, z, at::kFloat, latent_shape);
  }
  if (philox_keys) {
    PNP_CHECK_TENSOR(*philox_keys, z, at::kLong, pair_shape);
  }
  TORCH_CHECK_VALUE(philox_step >= 0 && philox_step < (int64_t{1} << 32), "philox_step must be in [0, 2**32), got ",
                    philox_step);
  TORCH_CHECK_VALUE(philox_iteration >= 0 && philox_iteration < (int64_t{1} << 32),
                    "philox_iteration must be in [0, 2**32), got ", philox_iteration);
  TORCH_CHECK_VALUE(x0.has_value() == certain.has_value(), "x0 and certain must be given together");
  if (x0) {
    PNP_CHECK_TENSOR(*x0, z, at::kFloat, latent_shape);
    PNP_CHECK_TENSOR(*certain, z, at::kBool, mask_shape);
  }
  PNP_CHECK_TENSOR(z_next, z, at::kFloat, latent_shape);
  PNP_CHECK_TENSOR(certain_fraction, z, at::kFloat, batch_shape);
  PNP_CHECK_TENSOR(nonfinite, z, at::kInt, batch_shape);
  if (z_perturbed) {
    PNP_CHECK_TENSOR(*z_perturbed, z, at::kFloat, latent_shape);
  }
  if (uncertainty) {
    PNP_CHECK_TENSOR(*uncertainty, z, at::kFloat, mask_shape);
  }

  const std::optional<at::Tensor> z_opt(z), v_opt(v), z_next_opt(z_next), fraction_opt(certain_fraction),
      nonfinite_opt(nonfinite);
  check_no_overlap({{"x0", &x0}, {"z_next", &z_next_opt}, {"certain", &certain}, {"certain_fraction", &fraction_opt},
                    {"nonfinite", &nonfinite_opt}, {"z_perturbed", &z_perturbed}, {"uncertainty", &uncertainty}},
                   {{"z", &z_opt}, {"v", &v_opt}, {"v_uncond", &v_uncond}, {"prev_x0", &prev_x0},
                    {"prev_z_next", &prev_z_next}, {"prev_certain", &prev_certain}, {"active", &active},
                    {"noise", &noise}, {"philox_keys", &philox_keys}});

  const c10::cuda::CUDAGuard device_guard(z.device());
  const int64_t frame_size = z.size(3) * z.size(4);
  if (batch == 0 || frame_size == 0) {  // no position: nothing certain, nothing non-finite
    certain_fraction.zero_();
    nonfinite.zero_();
    return;
  }
  const at::Tensor stats = at::zeros({batch, kStatWords}, z.options().dtype(at::kInt));

  PnPUpdateParams params{};
  params.z = z.const_data_ptr<float>();
  params.v = v.const_data_ptr();
  params.v_uncond = v_uncond ? v_uncond->const_data_ptr() : nullptr;
  params.prev_x0 = data_or_null<float>(prev_x0);
  params.prev_z_next = data_or_null<float>(prev_z_next);
  params.prev_certain = data_or_null<bool>(prev_certain);
  params.active = data_or_null<bool>(active);
  params.noise = data_or_null<float>(noise);
  params.philox_keys = data_or_null<int64_t>(philox_keys);
  params.x0 = mutable_data_or_null<float>(x0);
  params.z_next = z_next.mutable_data_ptr<float>();
  params.certain = mutable_data_or_null<bool>(certain);
  params.certain_fraction = certain_fraction.mutable_data_ptr<float>();
  params.nonfinite = nonfinite.mutable_data_ptr<int32_t>();
  params.z_perturbed = mutable_data_or_null<float>(z_perturbed);
  params.uncertainty = mutable_data_or_null<float>(uncertainty);
  params.stats = reinterpret_cast<uint32_t*>(stats.mutable_data_ptr<int32_t>());
  params.batch = batch;
  params.channels = channels;
  params.positions = frames * frame_size;
  params.pinned_positions = num_pinned_frames * frame_size;
  // float32(n) for the positions outside the pinned frames, as the reference divides by.
  params.free_positions = static_cast<float>(std::max<int64_t>(params.positions - params.pinned_positions, 1));
  params.guidance_scale = static_cast<float>(guidance_scale);
  params.sigma = static_cast<float>(sigma);
  params.one_minus_sigma = static_cast<float>(1.0 - sigma);
  params.dt = static_cast<float>(sigma_next - sigma);
  params.tau = static_cast<float>(tau);
  params.p_norm = static_cast<int>(p_norm);
  params.philox_step = static_cast<uint32_t>(philox_step);
  params.philox_iteration = static_cast<uint32_t>(philox_iteration);

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const cudaError_t status = v_dtype == at::kFloat  ? launch_pnp_update<VelocityDtype::kFloat32>(params, stream)
                             : v_dtype == at::kHalf ? launch_pnp_update<VelocityDtype::kFloat16>(params, stream)
                                                    : launch_pnp_update<VelocityDtype::kBFloat16>(params, stream);
  TORCH_CHECK(status == cudaSuccess, "pnp_update_cuda launch failed: ", cudaGetErrorString(status));
}

// Shapes and dtypes only (FakeTensor / torch.compile tracing): the op writes into its arguments.
void pnp_update_meta(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                     const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                     const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                     const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, int64_t, int64_t, double,
                     double, double, double, int64_t, int64_t, const std::optional<at::Tensor>&, const at::Tensor&,
                     const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
                     const std::optional<at::Tensor>&, const std::optional<at::Tensor>&) {}

}  // namespace
}  // namespace pnp_kernels

TORCH_LIBRARY_FRAGMENT(pnp_kernels, m) {
  m.def(
      "pnp_update_cuda(Tensor z, Tensor v, Tensor? v_uncond, Tensor? prev_x0, Tensor? prev_z_next, "
      "Tensor? prev_certain, Tensor? active, Tensor? noise, Tensor? philox_keys, int philox_step, "
      "int philox_iteration, float sigma, float sigma_next, float guidance_scale, float tau, int p_norm, "
      "int num_pinned_frames, Tensor(a!)? x0, Tensor(b!) z_next, Tensor(c!)? certain, "
      "Tensor(d!) certain_fraction, Tensor(e!) nonfinite, Tensor(f!)? z_perturbed, "
      "Tensor(g!)? uncertainty) -> ()");
}

TORCH_LIBRARY_IMPL(pnp_kernels, CUDA, m) { m.impl("pnp_update_cuda", &pnp_kernels::pnp_update_cuda); }

TORCH_LIBRARY_IMPL(pnp_kernels, Meta, m) { m.impl("pnp_update_cuda", &pnp_kernels::pnp_update_meta); }
