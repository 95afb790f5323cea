"""GPU check of the whole model: the "triton" backend against the "torch" reference at GPT-1 size,
fp32 and bf16 autocast, forward and every gradient; and torch.compile(fullgraph=True) of the
triton model (no graph breaks). Prints relative errors; exits non-zero on a failure.

    PYTHONPATH=. python benchmarks/gpu_check_model.py
"""
from __future__ import annotations

import sys

import torch

from gpt1_fast.config import GPTConfig
from gpt1_fast.model import DoubleHeadModel, set_backend

N_VOCAB, N_SPECIAL, T, B = 40478, 3, 77, 8
VOCAB = N_VOCAB + N_SPECIAL + T


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def run(model, X, amp):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        lm, clf = model(X)
    (lm.float().logsumexp(-1).mean() + clf.float().pow(2).sum()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return lm.detach().float(), clf.detach().float(), grads


def main():
    torch.manual_seed(0)
    cfg = GPTConfig(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0, backend="torch")
    model = DoubleHeadModel(cfg, N_VOCAB + 2, "multiple_choice", VOCAB, T).cuda()
    X = torch.zeros(B, 2, T, 2, dtype=torch.long)
    X[..., 0] = torch.randint(0, N_VOCAB, (B, 2, T))
    X[..., 1] = torch.arange(N_VOCAB + N_SPECIAL, VOCAB)
    X[:, :, T // 2 + 5, 0] = N_VOCAB + 2
    X = X.cuda()
    ref = run(model, X, amp=False)
    ok = True
    for backend, amp, tol in [("triton", False, 2e-3), ("torch", True, None), ("triton", True, 5e-2)]:
        set_backend(model, backend)
        out = run(model, X, amp)
        errs = {"lm": rel(out[0], ref[0]), "clf": rel(out[1], ref[1])}
        gerr = {n: rel(g, ref[2][n]) for n, g in out[2].items()}
        worst = max(gerr, key=gerr.get)
        print(f"{backend:6s} {'bf16' if amp else 'fp32'}: lm {errs['lm']:.2e} clf {errs['clf']:.2e} "
              f"worst grad {worst} {gerr[worst]:.2e}")
        if tol is not None and (max(errs.values()) > tol or gerr[worst] > tol * 5):
            ok = False
            print(f"  FAIL: above tolerance {tol}")
    set_backend(model, "triton")
    compiled = torch.compile(model, fullgraph=True)
    out = run(compiled, X, amp=True)
    print(f"torch.compile(fullgraph=True) triton bf16: lm {rel(out[0], ref[0]):.2e} clf {rel(out[1], ref[1]):.2e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
