"""What the training-step tests share: a ROCStories-shaped batch and the trainer's step."""
from __future__ import annotations

import contextlib

import torch

N_SPECIAL = 3


def rocstories_batch(B: int, T: int, n_vocab: int, seed: int, device="cpu"):
    """(X, M, Y): B stories x 2 endings, lengths in [T/2, T) padded to T (a quarter of the LM rows are
    padding), the classify token at each end, token + position ids packed as the model reads them."""
    g = torch.Generator().manual_seed(seed)
    X = torch.zeros(B, 2, T, 2, dtype=torch.long)
    X[..., 0] = torch.randint(0, n_vocab, (B, 2, T), generator=g)
    X[..., 1] = torch.arange(n_vocab + N_SPECIAL, n_vocab + N_SPECIAL + T)
    lengths = torch.randint(T // 2, T, (B, 2), generator=g)
    X[torch.arange(B)[:, None], torch.arange(2)[None], lengths, 0] = n_vocab + 2
    M = (torch.arange(T) <= lengths[..., None]).float()
    return X.to(device), M.to(device), torch.randint(0, 2, (B,), generator=g).to(device)


def trainer_step(model, opt, bf16: bool = False):
    """What Trainer.train_step runs on the device: the objective, backward, the optimizer, gradients
    released (set to None). Returns the loss."""
    def step(X, M, Y):
        amp = torch.autocast(X.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with amp:
            loss = model(X, M, Y)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step
