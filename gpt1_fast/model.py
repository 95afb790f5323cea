"""GPT-1 (Radford et al. 2018): the model, with the seed port's public names and parameter names.

Post-LayerNorm blocks: a = attn(x); n = ln_1(x + a); m = mlp(n); h = ln_2(n + m).
Every compute op goes through gpt1_fast.ops, whose backend ('torch' reference, 'triton' fused,
'cpu', 'auto') is `cfg.backend`, or set later with `set_backend(model, name)`.

Inputs: the seed's packed `[..., n_ctx, 2]` tensor (token ids, position ids), or plain token ids via
`model(input_ids=ids)` (positions implied: the last `n_ctx` rows of the embedding table).
Embedding dropout drops the looked-up vectors, as the PyTorch port does (the TF release drops rows
of the table; both are allowed by the spec).
"""
from __future__ import annotations

import collections.abc

import torch
import torch.nn as nn
import torch.utils.checkpoint

from . import ops, reference
from .config import DEFAULT_CONFIG, GPTConfig  # noqa: F401  (DEFAULT_CONFIG re-exported)
from .kv_cache import KVCache, LayerCache, check_length
from .weights import load_openai_pretrained_model  # noqa: F401  (the seed's `from model import ...`)


class LayerNorm(nn.Module):
    """LayerNorm with the original's parameter names (g, b) and eps 1e-5 inside the sqrt."""

    def __init__(self, n_state: int, e: float = 1e-5, backend: str = "auto"):
        super().__init__()
        self.g = nn.Parameter(torch.ones(n_state))
        self.b = nn.Parameter(torch.zeros(n_state))
        self.e = e
        self.backend = backend

    def forward(self, x, residual=None):
        return ops.layer_norm(x, self.g, self.b, self.e, residual=residual, backend=self.backend)


class Dropout(nn.Dropout):
    """nn.Dropout through ops.dropout, so that the backend decides how the mask is drawn."""

    def __init__(self, p: float, backend: str = "auto"):
        super().__init__(p)
        self.backend = backend

    def forward(self, x):
        return ops.dropout(x, self.p, self.training, self.backend)


class Conv1D(nn.Module):
    """The original's 1x1 convolution: y = x @ w + b, w stored [in, out]."""

    def __init__(self, nf: int, rf: int, nx: int):
        super().__init__()
        if rf != 1:
            raise NotImplementedError("only rf == 1 (a linear layer), as in GPT-1")
        self.rf, self.nf = rf, nf
        self.w = nn.Parameter(torch.empty(nx, nf).normal_(std=0.02))
        self.b = nn.Parameter(torch.zeros(nf))

    def forward(self, x, with_bias: bool = True):
        return ops.linear(x, self.w, self.b if with_bias else None)


class Attention(nn.Module):
    def __init__(self, nx: int, n_ctx: int, cfg: GPTConfig, scale: bool = True):
        super().__init__()
        if nx % cfg.n_head:
            raise ValueError(f"n_embd {nx} is not divisible by n_head {cfg.n_head}")
        if not scale:
            raise NotImplementedError("GPT-1 always scales scores by 1/sqrt(head_dim)")
        self.n_head = cfg.n_head
        self.split_size = nx
        self.backend = cfg.backend
        # The original's mask buffer, kept (persistent) so seed checkpoints load with strict=True.
        self.register_buffer("b", ops.causal_mask(n_ctx, None))
        self.c_attn = Conv1D(nx * 3, 1, nx)
        self.c_proj = Conv1D(nx, 1, nx)
        self.attn_dropout = nn.Dropout(cfg.attn_pdrop)  # its p goes to ops.attention
        self.resid_dropout = Dropout(cfg.resid_pdrop, cfg.backend)

    def forward(self, x, kv: LayerCache | None = None):
        qkv = self.c_attn(x)
        if kv is None:
            a = ops.attention(qkv, self.n_head, self.attn_dropout.p, self.training, mask_b=self.b, backend=self.backend)
        else:
            a = self._cached(qkv, kv)
        return self.resid_dropout(self.c_proj(a))

    def _cached(self, qkv, kv: LayerCache):
        """Write the new keys/values into the cache's columns start.., attend over everything filled."""
        B, T, C3 = qkv.shape
        C = C3 // 3
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in qkv.split(C, dim=2))
        end = kv.start + T
        kv.k[:, :, kv.start:end] = k
        kv.v[:, :, kv.start:end] = v
        a = ops.attention_step(q, kv.k[:, :, :end], kv.v[:, :, :end], kv.mask[:, :end], self.attn_dropout.p,
                               self.training, backend=self.backend)
        return a.transpose(1, 2).reshape(B, T, C)


class MLP(nn.Module):
    def __init__(self, n_state: int, cfg: GPTConfig):
        super().__init__()
        nx = cfg.n_embd
        self.c_fc = Conv1D(n_state, 1, nx)
        self.c_proj = Conv1D(nx, 1, n_state)
        self.afn = cfg.afn
        self.backend = cfg.backend
        self.dropout = Dropout(cfg.resid_pdrop, cfg.backend)

    def forward(self, x):
        # Bias + activation in one pass after a bias-free GEMM (Triton: recomputed in backward).
        h = ops.act_linear(self.c_fc(x, with_bias=False), self.c_fc.b, self.c_proj.w, self.c_proj.b, self.afn,
                           backend=self.backend)
        return self.dropout(h)


class Block(nn.Module):
    def __init__(self, n_ctx: int, cfg: GPTConfig, scale: bool = True):
        super().__init__()
        nx = cfg.n_embd
        self.attn = Attention(nx, n_ctx, cfg, scale)
        self.ln_1 = LayerNorm(nx, backend=cfg.backend)
        self.mlp = MLP(4 * nx, cfg)
        self.ln_2 = LayerNorm(nx, backend=cfg.backend)

    def forward(self, x, kv: LayerCache | None = None):
        a = self.attn(x, kv)
        n = self.ln_1(x, residual=a)
        m = self.mlp(n)
        return self.ln_2(n, residual=m)


class TransformerModel(nn.Module):
    """The GPT-1 transformer: embeddings + blocks -> hidden states [B, T, n_embd] (packed input:
    [..., T, n_embd] with the leading dims flattened to one, as the seed)."""

    def __init__(self, cfg: GPTConfig = DEFAULT_CONFIG, vocab: int = 40990, n_ctx: int = 512):
        super().__init__()
        if cfg.backend not in ops.BACKENDS:
            raise ValueError(f"unknown backend {cfg.backend!r}; expected one of {ops.BACKENDS}")
        self.vocab, self.n_ctx, self.n_embd = vocab, n_ctx, cfg.n_embd
        self.embed = nn.Embedding(vocab, cfg.n_embd)
        self.drop = Dropout(cfg.embd_pdrop, cfg.backend)
        # every block drawn on its own (N(0, 0.02) weights, 0 biases, LayerNorm 1/0), as the paper and the
        # TF release; the PyTorch port deep-copied one block, so its layers started identical
        self.h = nn.ModuleList([Block(n_ctx, cfg, scale=True) for _ in range(cfg.n_layer)])
        self.activation_checkpointing = cfg.activation_checkpointing
        self.backend = cfg.backend
        nn.init.normal_(self.embed.weight, std=0.02)

    @property
    def pos_offset(self) -> int:
        """Row of position 0 in the embedding table (n_vocab + n_special)."""
        return self.vocab - self.n_ctx

    def new_kv_cache(self, batch: int, dtype: torch.dtype | None = None, capacity: int | None = None) -> KVCache:
        """An empty cache for `batch` rows and `capacity` columns (default n_ctx)."""
        w = self.embed.weight
        n_head = self.h[0].attn.n_head
        return KVCache(len(self.h), batch, n_head, capacity or self.n_ctx, self.n_embd // n_head, w.device,
                       dtype or w.dtype)

    def forward(self, x: torch.Tensor | None = None, *, input_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                kv_cache: KVCache | None = None):
        """Hidden states [B, T, n_embd]; with `kv_cache`, (hidden states, the cache advanced by T).

        position_ids [B, T]: 0-based positions (default: continued from the cache, counting only
        real tokens, so left padding shifts nothing). attention_mask [B, T]: 0 at padding tokens.
        """
        if (x is None) == (input_ids is None):
            raise TypeError("pass exactly one of: a packed [..., T, 2] tensor, or input_ids=[..., T]")
        if x is not None:
            if position_ids is not None or attention_mask is not None or kv_cache is not None:
                raise TypeError("position_ids, attention_mask and kv_cache go with input_ids= (the packed "
                                "input carries its own positions)")
            if x.dim() < 2 or x.size(-1) != 2:
                raise ValueError(f"packed input must have shape [..., T, 2], got {tuple(x.shape)}; "
                                 "for plain token ids call model(input_ids=ids)")
            x = x.view(-1, x.size(-2), x.size(-1))
            h = self.drop(self.embed(x)).sum(dim=2)  # token + position vectors
            return self._blocks(h, None)
        T = input_ids.size(-1)
        ids = input_ids.reshape(-1, T)
        start = kv_cache.length if kv_cache is not None else 0
        check_length(start + T, self.n_ctx, kv_cache)
        cache = kv_cache
        if cache is None and attention_mask is not None:  # padding needs the key mask: a one-off cache
            cache = self.new_kv_cache(ids.size(0), capacity=T)
        if position_ids is not None and position_ids.numel() and not (
                0 <= int(position_ids.min()) <= int(position_ids.max()) < self.n_ctx):  # explicit ones only (a sync)
            raise ValueError(f"position ids must lie in [0, {self.n_ctx}), got {int(position_ids.min())}.."
                             f"{int(position_ids.max())}")
        if cache is not None:
            positions = cache.admit(T, attention_mask)
            position_ids = positions if position_ids is None else position_ids
        if position_ids is None:
            position_ids = torch.arange(T, device=ids.device)
        h = self.drop(self.embed(ids)) + self.drop(self.embed(position_ids + self.pos_offset))
        h = self._blocks(h, cache)
        if kv_cache is None:
            return h
        kv_cache.length += T
        return h, kv_cache

    def block_matrices(self) -> dict[str, nn.Parameter]:
        """The blocks' weight matrices by name (bf16 evaluation and decoding copy these once)."""
        return {f"h.{name}": p for name, p in self.h.named_parameters() if p.dim() == 2}

    def _blocks(self, h, cache: KVCache | None):
        dev = h.device.type
        if torch.is_autocast_enabled(dev) and ops.resolve(self.backend, h) == "triton":
            # The residual stream in the autocast dtype: the fused LayerNorm normalises in float32 and
            # writes bf16, so no float32 copy of it is kept per block (the GEMMs read bf16 either way).
            h = h.to(torch.get_autocast_dtype(dev))
        recompute = self.activation_checkpointing and cache is None and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.h):
            if recompute:
                # dropout masks come out the same on recompute: checkpoint restores the RNG state
                h = torch.utils.checkpoint.checkpoint(block, h, use_reentrant=False)
            else:
                h = block(h, None if cache is None else cache.layer(i))
        return h

    def generate(self, input_ids, max_new_tokens: int = 20, **kw):
        """Sample continuations with the tied LM head: see `gpt1_fast.sampling.generate`."""
        from .sampling import generate

        return generate(self, input_ids, max_new_tokens, **kw)


class LMHead(nn.Module):
    """Language-model head tied to the embedding table: logits over every row (positions and
    special tokens included, as the original). `loss` is the training objective's LM term."""

    def __init__(self, model: TransformerModel, cfg: GPTConfig, trunc_and_reshape: bool = True):
        super().__init__()
        self.n_embd = cfg.n_embd
        self.backend = cfg.backend
        embed_shape = model.embed.weight.shape
        self.decoder = nn.Linear(embed_shape[1], embed_shape[0], bias=False)
        self.decoder.weight = model.embed.weight  # tied
        self.trunc_and_reshape = trunc_and_reshape  # drop the last position, flatten to [N, vocab]

    def forward(self, h):
        h_trunc = h[:, :-1].contiguous().view(-1, self.n_embd) if self.trunc_and_reshape else h
        return self.decoder(h_trunc)

    def loss(self, h, x, mask):
        """Per-sequence LM loss (SPEC §4): position t predicts token t+1 (the shift), each term
        weighted by mask[t+1] (padding counts for nothing), summed and divided by the sequence's
        mask[1:].sum(). h [N, T, C] for the N = prod(x.shape[:-2]) sequences of x [..., T, 2]."""
        T = x.size(-2)
        targets = x[..., 1:, 0].reshape(-1)
        m = mask[..., 1:].reshape(-1, T - 1)
        h_prev = h[:, :-1].reshape(-1, self.n_embd)
        lm = ops.lm_head_loss(h_prev, self.decoder.weight, targets, m.reshape(-1), backend=self.backend)
        return lm.view(-1, T - 1).sum(1) / m.sum(1)


def _clf_states(h, x, clf_token: int, n_embd: int):
    """Hidden states at the classify token of each sequence: the first occurrence (TF: argmax)."""
    tokens = x[..., 0].reshape(-1, x.size(-2))
    idx = (tokens == clf_token).int().argmax(dim=-1)
    return h.reshape(-1, x.size(-2), n_embd)[torch.arange(tokens.size(0), device=h.device), idx]


class ClfHead(nn.Module):
    """Classification head: classify-token state -> dropout -> linear C -> n_class."""

    def __init__(self, clf_token: int, cfg: GPTConfig, n_class: int):
        super().__init__()
        self.n_embd = cfg.n_embd
        self.clf_token = clf_token
        self.dropout = Dropout(cfg.clf_pdrop, cfg.backend)
        self.linear = nn.Linear(cfg.n_embd, n_class)
        nn.init.normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h, x):
        return self.linear(self.dropout(_clf_states(h, x, self.clf_token, self.n_embd)))


class MultipleChoiceHead(ClfHead):
    """Story Cloze head: classify-token states [B, n_choices, C] -> dropout with one mask shared by all
    choices of an example (TF noise_shape [B, 1, C]) -> linear C -> 1 -> logits [B, n_choices]."""

    def __init__(self, clf_token: int, cfg: GPTConfig):
        super().__init__(clf_token, cfg, 1)  # its dropout is applied to a [B, 1, C] mask, see forward

    def forward(self, h, x):
        clf_h = _clf_states(h, x, self.clf_token, self.n_embd).view(-1, x.size(1), self.n_embd)
        if self.training and self.dropout.p > 0:
            keep = self.dropout(torch.ones_like(clf_h[:, :1]))  # 0 or 1/(1-p), shared across choices
            clf_h = clf_h * keep
        return self.linear(clf_h).view(-1, x.size(1))


class ScoreHead(ClfHead):
    """Regression on one text: classify-token state -> dropout -> linear C -> 1, read as a score [B]."""

    def __init__(self, clf_token: int, cfg: GPTConfig):
        super().__init__(clf_token, cfg, 1)

    def forward(self, h, x):
        return super().forward(h, x).view(-1)


class SimilarityHead(ClfHead):
    """Similarity head: x is [B, 2, T, 2] (both orderings); their classify states are summed -> linear
    C -> n_class. n_class 1 (the seed's head): one score per pair, [B] (STS-B's regression)."""

    def __init__(self, clf_token: int, cfg: GPTConfig, n_class: int = 1):
        super().__init__(clf_token, cfg, n_class)
        self.n_class = n_class

    def forward(self, h, x):
        sim_h = _clf_states(h, x, self.clf_token, self.n_embd).view(-1, x.size(1), self.n_embd)
        out = self.linear(self.dropout(sim_h).sum(dim=1))
        return out.view(-1) if self.n_class == 1 else out


class LMModel(nn.Module):
    """Transformer + tied LM head: logits, or with `targets` the pretraining objective (nanoGPT's
    `forward(idx, targets)`). `return_probs` gives softmax probabilities with the position columns
    masked (-1e12), for sampling."""

    def __init__(self, cfg: GPTConfig = DEFAULT_CONFIG, vocab: int = 40990, n_ctx: int = 512, return_probs: bool = False):
        super().__init__()
        self.transformer = TransformerModel(cfg, vocab=vocab, n_ctx=n_ctx)
        self.lm_head = LMHead(self.transformer, cfg, trunc_and_reshape=False)
        self.return_probs = return_probs
        if return_probs:
            pos_emb_mask = torch.zeros(1, 1, vocab)
            pos_emb_mask[:, :, -n_ctx:] = -1e12
            self.register_buffer("pos_emb_mask", pos_emb_mask)

    def forward(self, x=None, *, input_ids=None, targets=None, **kw):
        """Logits [B, T, vocab] (kw: position_ids, attention_mask, kv_cache as TransformerModel; with
        kv_cache: (logits, cache)). With `targets` [B, T] (the next token of every position):
        {"loss": mean cross-entropy over every position}, through the fused LM-head loss where the
        backend has one (no [B, T, vocab] logits are made).

        The loss's softmax covers the token rows of the table (and the special tokens), not the
        position rows: positions are never words, the release's checkpoint keeps them in a table of
        their own, and Hugging Face's LM head covers the tokens only. (Fine-tuning's auxiliary LM
        loss keeps the release's softmax over the whole table: LMHead.loss.)"""
        h = self.transformer(x, input_ids=input_ids, **kw)
        if targets is not None:
            rows = h.reshape(-1, h.size(-1))
            words = self.lm_head.decoder.weight[:self.transformer.pos_offset]
            ones = torch.ones(rows.size(0), device=h.device, dtype=torch.float32)  # every position predicts
            loss = ops.lm_head_loss(rows, words, targets.reshape(-1), ones, backend=self.lm_head.backend)
            return {"loss": loss.mean()}
        h, cache = h if isinstance(h, tuple) else (h, None)
        lm_logits = self.lm_head(h)
        if self.return_probs:
            lm_logits = torch.softmax(lm_logits + self.pos_emb_mask, dim=-1)
        return lm_logits if cache is None else (lm_logits, cache)

    def generate(self, input_ids, max_new_tokens: int = 20, **kw):
        """Sample continuations: see `gpt1_fast.sampling.generate`."""
        return self.transformer.generate(input_ids, max_new_tokens, **kw)


def _pair(task_head_type, name):
    """n_class of a ('name', n_class) head type, else None."""
    if (isinstance(task_head_type, collections.abc.Sequence) and not isinstance(task_head_type, str)
            and len(task_head_type) == 2 and task_head_type[0] == name):
        return int(task_head_type[1])
    return None


class DoubleHeadModel(nn.Module):
    """Transformer + LM head + a task head, and the fine-tuning objective (SPEC §4).

    forward(x) -> (lm_logits, task_logits), as the seed. forward(x, mask, labels) -> a dict with
    `loss` = mean(task_losses) + lm_coef * mean(lm_losses) (the TF release), the per-example
    `task_losses`, the per-sequence `lm_losses` (None when lm_coef is 0) and the `task_logits`.

    task_head_type: 'multiple_choice', 'similarity' (one score per pair: regression, squared error),
    ('similarity', n_class), ('similarity_soft_labels', n_class) (a score y in [0, n_class - 1] as a
    distribution over the classes 0..n_class-1, the TF release's STS-B: labels are the scores, the
    task outputs logits over the classes), 'inference' (3 classes), ('classification', n_class), or
    'regression' (one score per text, squared error); the heads but the two regression ones are
    trained with cross-entropy (soft labels: against the distribution).
    """

    def __init__(self, cfg: GPTConfig, clf_token: int, task_head_type, vocab: int = 40990, n_ctx: int = 512,
                 lm_coef: float = 0.5):
        super().__init__()
        self.transformer = TransformerModel(cfg, vocab=vocab, n_ctx=n_ctx)
        self.lm_head = LMHead(self.transformer, cfg)
        self.lm_coef = lm_coef
        self.regression = task_head_type in ("similarity", "regression")
        self.soft_labels = _pair(task_head_type, "similarity_soft_labels")  # n_class of the score's classes
        if task_head_type == "multiple_choice":
            self.task_head = MultipleChoiceHead(clf_token, cfg)
        elif task_head_type == "similarity" or _pair(task_head_type, "similarity") or self.soft_labels:
            self.task_head = SimilarityHead(clf_token, cfg, _pair(task_head_type, "similarity") or self.soft_labels or 1)
        elif task_head_type == "regression":  # one score per text
            self.task_head = ScoreHead(clf_token, cfg)
        elif task_head_type == "inference":  # entailment, contradiction, neutral
            self.task_head = ClfHead(clf_token, cfg, 3)
        elif _pair(task_head_type, "classification"):
            self.task_head = ClfHead(clf_token, cfg, _pair(task_head_type, "classification"))
        else:
            raise ValueError("task_head_type should be 'multiple_choice', 'similarity', ('similarity', n_class), "
                             "('similarity_soft_labels', n_class), 'inference', ('classification', n_class) or "
                             f"'regression', got {task_head_type!r}")

    def forward(self, x, mask=None, labels=None):
        h = self.transformer(x)
        task_logits = self.task_head(h, x)
        if mask is None and labels is None:
            return self.lm_head(h), task_logits
        if labels is None or (mask is None and self.lm_coef):
            raise TypeError("the training objective needs both mask and labels")
        task_losses = self.task_loss(task_logits, labels)
        lm_losses = self.lm_head.loss(h, x, mask) if self.lm_coef else None
        loss = task_losses.mean() if lm_losses is None else task_losses.mean() + self.lm_coef * lm_losses.mean()
        return {"loss": loss, "task_losses": task_losses, "lm_losses": lm_losses, "task_logits": task_logits}

    def task_loss(self, task_logits, labels):
        """Per-example task loss: squared error for the regression head, else cross-entropy."""
        if self.regression:
            return (task_logits.float() - labels.float()).pow(2)
        if self.soft_labels:
            return reference.soft_cross_entropy(task_logits, reference.soft_labels(labels.float(), self.soft_labels))
        return ops.cross_entropy(task_logits, labels)

    def task_logits(self, x):
        """Task-head outputs only (evaluation: no LM head)."""
        return self.task_head(self.transformer(x), x)


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switch every op of `model` to another backend ('torch', 'triton', 'cpu', 'auto') in place."""
    if backend not in ops.BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {ops.BACKENDS}")
    for m in model.modules():
        if hasattr(m, "backend"):
            m.backend = backend
    return model
