// gpt1_fast::_C, CUDA bindings: tensors -> raw pointers for the launchers in openai_adam_cuda.cu.
// Nothing here reads device memory: the host only packs pointers (and CPU step counters, when the
// optimizer keeps them on the host), so a step never waits for the GPU.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <vector>

#define GPT1_FAST_WITH_CUDA  // the launcher declarations of openai_adam.h
#include "openai_adam.h"
#include "openai_adam_checks.h"

namespace gpt1_fast {

namespace {

GradDtype grad_dtype(const at::Tensor& g, const char* what) {
  switch (g.scalar_type()) {
    case at::kFloat: return kGradF32;
    case at::kHalf: return kGradF16;
    case at::kBFloat16: return kGradBF16;
    default: TORCH_CHECK(false, "gpt1_fast::", what, ": gradients must be float32, float16 or bfloat16, got ",
                         g.scalar_type());
  }
}

void check_launch(int err, const char* what) {
  TORCH_CHECK(err == 0, "gpt1_fast::", what, ": CUDA error: ", cuda_error_string(err));
}

at::Tensor global_norm_cuda(at::TensorList tensors) {
  TORCH_CHECK(!tensors.empty(), "gpt1_fast::global_norm: needs at least one tensor");
  const c10::Device device = tensors[0].device();
  const c10::cuda::CUDAGuard guard(device);
  std::vector<at::Tensor> keep;  // contiguous copies of non-contiguous inputs, alive until launched
  std::vector<NormTensorRef> refs;
  refs.reserve(tensors.size());
  for (const auto& t : tensors) {
    TORCH_CHECK(t.device() == device, "gpt1_fast::global_norm: all tensors must be on ", device);
    const GradDtype dt = grad_dtype(t, "global_norm");
    const at::Tensor& c = t.is_contiguous() ? t : keep.emplace_back(t.contiguous());
    refs.push_back({c.const_data_ptr(), c.numel(), dt});
  }
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  at::Tensor workspace = at::empty({norm_workspace_size(refs.data(), static_cast<int>(refs.size()))}, opts);
  at::Tensor out = at::empty({}, opts);
  check_launch(launch_global_norm(refs.data(), static_cast<int>(refs.size()), workspace.data_ptr<float>(),
                                  out.data_ptr<float>(), at::cuda::getCurrentCUDAStream().stream()),
               "global_norm");
  return out;
}

void openai_adam_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                      at::TensorList exp_avg_sqs, at::TensorList steps, const std::optional<at::Tensor>& grad_norm,
                      double max_grad_norm, double lr, int64_t schedule, double warmup, double t_total, double b1,
                      double b2, double eps, double l2, bool vector_l2) {
  check_adam_lists(params, grads, exp_avgs, exp_avg_sqs, steps);
  if (params.empty()) return;
  const AdamHyper h = make_hyper(max_grad_norm, lr, schedule, warmup, t_total, b1, b2, eps, l2);
  const c10::Device device = params[0].device();
  TORCH_CHECK(device.is_cuda(), "gpt1_fast::openai_adam_ (CUDA): parameters must be CUDA tensors");
  const c10::cuda::CUDAGuard guard(device);
  const float* norm_ptr = nullptr;
  if (grad_norm.has_value() && max_grad_norm > 0) {
    TORCH_CHECK(grad_norm->device() == device && grad_norm->numel() == 1 && grad_norm->scalar_type() == at::kFloat,
                "gpt1_fast::openai_adam_: grad_norm must be a one-element float32 tensor on ", device);
    norm_ptr = grad_norm->const_data_ptr<float>();
  }
  std::vector<at::Tensor> keep;
  std::vector<AdamTensorRef> refs;
  std::vector<float*> device_steps;
  refs.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    TORCH_CHECK(params[i].device() == device, "gpt1_fast::openai_adam_: all parameters must be on ", device);
    const GradDtype dt = grad_dtype(grads[i], "openai_adam_");
    const at::Tensor& g = grads[i].is_contiguous() ? grads[i] : keep.emplace_back(grads[i].contiguous());
    AdamTensorRef r{params[i].data_ptr<float>(), g.const_data_ptr(), exp_avgs[i].data_ptr<float>(),
                    exp_avg_sqs[i].data_ptr<float>(), params[i].numel(), nullptr, 0.f, dt,
                    params[i].dim() > 1 || vector_l2};
    if (steps[i].is_cuda()) {
      r.step_ptr = steps[i].data_ptr<float>();
      device_steps.push_back(steps[i].data_ptr<float>());
    } else {
      r.step = *steps[i].const_data_ptr<float>();  // host counter: read here, no device sync
    }
    refs.push_back(r);
  }
  void* stream = at::cuda::getCurrentCUDAStream().stream();
  check_launch(launch_openai_adam(refs.data(), static_cast<int>(refs.size()), h, norm_ptr, stream), "openai_adam_");
  // Counters advance after the update has read them: device ones on the stream, host ones here.
  if (!device_steps.empty())
    check_launch(launch_increment_steps(device_steps.data(), static_cast<int>(device_steps.size()), stream),
                 "openai_adam_");
  for (size_t i = 0; i < params.size(); ++i)
    if (!steps[i].is_cuda()) *steps[i].data_ptr<float>() += 1.f;
}

}  // namespace
}  // namespace gpt1_fast

TORCH_LIBRARY_IMPL(gpt1_fast, CUDA, m) {
  m.impl("global_norm", &gpt1_fast::global_norm_cuda);
  m.impl("openai_adam_", &gpt1_fast::openai_adam_cuda);
}
