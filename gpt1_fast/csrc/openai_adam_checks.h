// Argument checks shared by the CPU and CUDA bindings (torch-side; not for nvcc).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "openai_adam.h"

namespace gpt1_fast {

inline void check_grad_dtype(const at::Tensor& g, const char* what) {
  const auto dt = g.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16,
              "gpt1_fast::", what, ": gradients must be float32, float16 or bfloat16, got ", dt);
}

// The checks every list of openai_adam_ must pass.
inline void check_adam_lists(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                      at::TensorList exp_avg_sqs, at::TensorList steps) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n && steps.size() == n,
              "gpt1_fast::openai_adam_: params, grads, exp_avgs, exp_avg_sqs and steps must have the same "
              "length, got ", n, ", ", grads.size(), ", ", exp_avgs.size(), ", ", exp_avg_sqs.size(), ", ",
              steps.size());
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(p.scalar_type() == at::kFloat, "gpt1_fast::openai_adam_: parameters must be float32, param ",
                i, " is ", p.scalar_type());
    TORCH_CHECK(p.is_contiguous(), "gpt1_fast::openai_adam_: param ", i, " is not contiguous");
    TORCH_CHECK(grads[i].device() == p.device() && grads[i].sizes() == p.sizes(),
                "gpt1_fast::openai_adam_: grad ", i, " must match its parameter's device and shape");
    check_grad_dtype(grads[i], "openai_adam_");
    for (const at::Tensor* s : {&exp_avgs[i], &exp_avg_sqs[i]}) {
      TORCH_CHECK(s->scalar_type() == at::kFloat && s->device() == p.device() && s->sizes() == p.sizes() &&
                      s->is_contiguous(),
                  "gpt1_fast::openai_adam_: exp_avg/exp_avg_sq ", i,
                  " must be contiguous float32 tensors of the parameter's device and shape");
    }
    TORCH_CHECK(steps[i].scalar_type() == at::kFloat && steps[i].numel() == 1 &&
                    (steps[i].device().is_cpu() || steps[i].device() == p.device()),
                "gpt1_fast::openai_adam_: step ", i,
                " must be a one-element float32 tensor on the CPU or on the parameter's device");
  }
}

inline AdamHyper make_hyper(double max_grad_norm, double lr, int64_t schedule, double warmup, double t_total, double b1,
                     double b2, double eps, double l2) {
  TORCH_CHECK(schedule >= kWarmupCosine && schedule <= kWarmupThenCosine, "gpt1_fast::openai_adam_: bad schedule id ",
              schedule);
  return AdamHyper{lr, warmup, t_total, b1, b2, static_cast<int>(schedule), static_cast<float>(eps),
                   static_cast<float>(l2), static_cast<float>(max_grad_norm)};
}

}  // namespace gpt1_fast
