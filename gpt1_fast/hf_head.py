"""A task head as transformers' `OpenAIGPTDoubleHeadsModel` holds it: `multiple_choice_head.summary`.

transformers' double-heads model takes the hidden state at `mc_token_ids` of every sequence and
applies one linear layer, `summary` (C -> 1, as it forces num_labels = 1; C -> C when
`summary_proj_to_labels` is false). Every head of this package is expressed exactly in eval mode:

    family                our head                    stored summary          call with (ids as in training)   our logits
    multiple choice       linear C->1 per choice      W, b                    ids [B, k, T]                    mc_logits [B, k]
    classification,       linear C->n                 n = 1: W, b             ids [B, T]                       mc_logits [B] (n = 1)
      entailment                                      n > 1: [W; 0], [b; PAD]                                   mc_logits[:, :n]
    similarity (pairs,    linear(s_ab + s_ba), C->n   W, b/2 (n > 1:          ids [B, 2, T], both orders       mc_logits.sum(1)
      both orders)                                     padded the same)                                         (n > 1: [..., :n])
    regression (texts)    linear C->1, read as [B]    W, b                    ids [B, T]                       mc_logits [B]
    regression (pairs)    the similarity head with n = 1: mc_logits.sum(1) [B]

with mc_token_ids = (ids == clf_token).int().argmax(-1), the first `_classify_` token (its id is
config.json's gpt1_fast.head.clf_token). The padding rows have weight 0 and bias PAD_LOGIT, far below
any real logit, so a softmax, an argmax or transformers' own multiple-choice loss over all C columns
equals the one over the n classes. The similarity head is linear, so linear(s1 + s2) = (W s1 + b/2) +
(W s2 + b/2): the sum of transformers' two per-order logits is ours (up to float rounding; b/2 and
back is exact for every float32 bias above 2**-125 in magnitude). In training mode one dropout
differs: our multiple-choice head shares one mask among an example's choices (the release's), where
transformers draws one per choice (summary_first_dropout = clf_pdrop). A head with more classes than the
width cannot be padded: it is kept under `gpt1_fast.task_head.*` and transformers loads the
transformer and its LM head alone (OpenAIGPTLMHeadModel).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import CheckpointError

HF_HEAD = "multiple_choice_head.summary"  # transformers' name for the head's linear layer
OWN_HEAD = "gpt1_fast.task_head"          # ours, for a head transformers cannot express
PAD_LOGIT = -1e4
_FAMILY = {"multiple_choice": "multiple_choice", "similarity": "similarity", "inference": "classification",
           "regression": "regression"}
_SIZED = {"classification": "classification", "similarity": "similarity",  # (name, n): the family
          "similarity_soft_labels": "similarity"}


@dataclass(frozen=True)
class HeadSpec:
    """What rebuilds a task head: DoubleHeadModel's `task_head_type` ('multiple_choice', 'similarity',
    'inference', 'regression', ('classification', n), ('similarity', n)), the classify token's id and
    DoubleHeadModel's lm_coef."""
    head_type: str | tuple
    clf_token: int
    lm_coef: float = 0.5

    def __post_init__(self):
        ht = self.head_type
        if isinstance(ht, list):
            object.__setattr__(self, "head_type", ht := tuple(ht))
        if not (ht in _FAMILY or (isinstance(ht, tuple) and len(ht) == 2 and ht[0] in _SIZED
                                  and isinstance(ht[1], int) and not isinstance(ht[1], bool) and ht[1] >= 1)):
            raise ValueError(f"head type {ht!r}: expected 'multiple_choice', 'similarity', 'inference', 'regression', "
                             "['classification', n], ['similarity', n] or ['similarity_soft_labels', n] with n >= 1")

    @property
    def family(self) -> str:
        return _FAMILY.get(self.head_type) or _SIZED[self.head_type[0]]

    @property
    def n_outputs(self) -> int:
        return {"multiple_choice": 1, "similarity": 1, "inference": 3, "regression": 1}.get(self.head_type) or \
            self.head_type[1]

    @property
    def regression(self) -> bool:
        """The head predicts a score (STS-B's soft labels too: the expected class), not a label."""
        return self.head_type in ("similarity", "regression") or (
            isinstance(self.head_type, tuple) and self.head_type[0] == "similarity_soft_labels")

    def expressible(self, n_embd: int) -> bool:
        """Whether transformers' double-heads model can hold this head (n <= C, or n == 1)."""
        return self.n_outputs == 1 or self.n_outputs <= n_embd

    def to_dict(self) -> dict:
        ht = list(self.head_type) if isinstance(self.head_type, tuple) else self.head_type
        return {"type": ht, "clf_token": self.clf_token, "lm_coef": self.lm_coef}

    @classmethod
    def from_dict(cls, d: dict) -> "HeadSpec":
        return cls(d["type"], int(d["clf_token"]), float(d.get("lm_coef", 0.5)))


def hf_config(spec: HeadSpec | None, n_embd: int, clf_pdrop: float) -> dict:
    """transformers' config keys for the head (the same keys, unused, without one)."""
    padded = spec is not None and spec.expressible(n_embd) and spec.n_outputs > 1
    return {"summary_type": "cls_index", "summary_use_proj": True, "summary_activation": None,
            "summary_proj_to_labels": not padded, "summary_first_dropout": clf_pdrop, "num_labels": 1}


def to_file(spec: HeadSpec, weight: torch.Tensor, bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """Our head's linear layer (weight [n, C], bias [n]) -> the tensors the folder stores."""
    n, c = weight.shape
    weight, bias = weight.detach(), bias.detach()
    if not spec.expressible(c):
        return {f"{OWN_HEAD}.weight": weight, f"{OWN_HEAD}.bias": bias}
    if spec.family == "similarity":
        bias = bias / 2  # each of the two orders carries half of it
    if n > 1:
        weight = torch.cat([weight, weight.new_zeros(c - n, c)])
        bias = torch.cat([bias, bias.new_full((c - n,), PAD_LOGIT)])
    return {f"{HF_HEAD}.weight": weight, f"{HF_HEAD}.bias": bias}


def from_file(spec: HeadSpec, tensors: dict, n_embd: int, file) -> tuple[torch.Tensor, torch.Tensor]:
    """The stored head tensors -> our linear layer (weight [n, C], bias [n]); every shape and the
    padding checked, each problem one CheckpointError naming `file`."""
    n = spec.n_outputs
    name = HF_HEAD if spec.expressible(n_embd) else OWN_HEAD
    rows = n if name == OWN_HEAD or n == 1 else n_embd
    w, b = tensors.get(f"{name}.weight"), tensors.get(f"{name}.bias")
    if w is None or b is None:
        raise CheckpointError(f"{file}: the {spec.family} head's tensors {name}.weight and {name}.bias not found "
                              f"(config.json says the model has a head)")
    if tuple(w.shape) != (rows, n_embd) or tuple(b.shape) != (rows,):
        raise CheckpointError(f"{file}: {name}: expected weight ({rows}, {n_embd}) and bias ({rows},) for a "
                              f"{spec.family} head with {n} output(s), found {tuple(w.shape)} and {tuple(b.shape)}")
    if rows > n and (w[n:].any() or not bool((b[n:] == PAD_LOGIT).all())):
        raise CheckpointError(f"{file}: {name}: rows {n}.. of the padded head must have weight 0 and bias "
                              f"{PAD_LOGIT:g} (a {n}-class head padded to {rows}); found other values")
    w, b = w[:n], b[:n]
    if name == HF_HEAD and spec.family == "similarity":
        b = b * 2
    return w.contiguous(), b.contiguous()
