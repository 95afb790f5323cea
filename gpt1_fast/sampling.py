"""Text generation with a key/value cache: one forward per new token, several prompts at once.

`generate(transformer, prompts, max_new_tokens, ...)` (also `TransformerModel.generate`,
`LMModel.generate`) continues each prompt (a list of token ids; prompts may differ in length: they
are left-padded, with positions counted per row so padding shifts nothing). The logits are the tied
LM head's, `h @ weᵀ`; as the original sampler (SPEC §7) the position rows get -1e12 before the
softmax, and so do the special tokens (ids >= n_vocab) when `n_vocab` is given.

At n_ctx a row stops ('n_ctx'), or with `sliding=True` keeps its last n_ctx // 2 tokens, re-encoded
from position 0 (not what the model was trained for: positions restart mid-text). The cache is
rebuilt exactly from the rows' tokens whenever it fills up while a shorter row still has room
(left padding of a finished long row is squeezed out), so every row can reach n_ctx.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

import torch

from . import cpu_decode

NEG = -1e12  # the original's mask value for the position columns


@dataclass
class Generation:
    tokens: list[list[int]]  # the new tokens of each row (an eos token or stop sequence excluded)
    finish_reasons: list[str]  # per row: 'length', 'eos', 'stop' or 'n_ctx'
    scores: list[torch.Tensor] = field(default_factory=list)  # output_scores: per row, [new tokens, vocab] logits


def vocab_mask(vocab: int, pos_offset: int, n_vocab: int | None, device) -> torch.Tensor:
    """[vocab] additive mask: 0 for tokens, -1e12 for the position rows (and specials, ids >= n_vocab)."""
    m = torch.zeros(vocab, device=device)
    m[pos_offset if n_vocab is None else n_vocab:] = NEG
    return m


def tied_logits(h: torch.Tensor, we: torch.Tensor) -> torch.Tensor:
    """[B, C] hidden states -> [B, vocab] logits h @ weᵀ, computed as (we @ hᵀ)ᵀ: the same products, but
    for the few rows of a decoding step the CPU BLAS streams the [vocab, C] table twice as fast in
    this orientation (benchmarks/NOTES.md, generation)."""
    return torch.mm(we, h.t()).t()


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the k largest logits of each row (ties broken by topk), -inf elsewhere."""
    values, idx = logits.topk(min(k, logits.size(-1)), dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, values)


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the most likely tokens until their probability reaches p (at least one), -inf elsewhere.
    A token is kept when the mass of the tokens ranked above it is still below p."""
    sorted_logits, idx = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.float().softmax(-1)
    drop = probs.cumsum(-1) - probs >= p
    return logits.scatter(-1, idx, sorted_logits.masked_fill(drop, float("-inf")))


def sampling_logits(logits, *, temperature=1.0, top_k=0, top_p=1.0) -> torch.Tensor:
    """The logits sampled from, in this order (as Hugging Face's samplers): divided by the temperature,
    then restricted to the top_k, then to the top_p nucleus of what is left (-inf elsewhere). The order
    matters: the temperature reshapes the distribution whose mass top_p counts."""
    logits = logits.float() / temperature
    if top_k:
        logits = filter_top_k(logits, top_k)
    if top_p < 1.0:
        logits = filter_top_p(logits, top_p)
    return logits


def next_tokens(logits, *, temperature=1.0, top_k=0, top_p=1.0, greedy=False, generator=None) -> torch.Tensor:
    """[B, vocab] logits -> [B] token ids."""
    if greedy:  # max's indices: argmax's (the first of equal maxima), in a third of its time on a CPU
        return logits.max(-1).indices
    logits = sampling_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def _as_rows(input_ids, attention_mask) -> list[list[int]]:
    if isinstance(input_ids, torch.Tensor):
        ids = input_ids.reshape(-1, input_ids.size(-1)) if input_ids.dim() else input_ids.view(1, 1)
        if attention_mask is not None:
            keep = attention_mask.reshape(ids.shape).bool()
            return [row[k].tolist() for row, k in zip(ids, keep)]
        return ids.tolist()
    rows = list(input_ids)
    if rows and all(isinstance(t, int) for t in rows):
        rows = [rows]  # one prompt given as a flat list
    return [[int(t) for t in r] for r in rows]


class _Stream:
    """Calls on_tokens(row, ids) with each row's new tokens once no stop sequence can still claim them."""

    def __init__(self, on_tokens, n_rows, hold):
        self.fn, self.sent, self.hold = on_tokens, [0] * n_rows, hold

    def push(self, row, toks, final=False):
        upto = len(toks) if final else max(len(toks) - self.hold, self.sent[row])
        if self.fn is not None and upto > self.sent[row]:
            self.fn(row, toks[self.sent[row]:upto])
        self.sent[row] = upto


class _Rows:
    """Each row's tokens (`hist`: prompt and new), its new tokens, why it finished, its scores."""

    def __init__(self, hist, on_tokens, on_finish, stops, eos):
        self.hist, self.new = hist, [[] for _ in hist]
        self.reasons: list[str | None] = [None] * len(hist)
        self.scores = [[] for _ in hist]
        self.stops, self.eos, self.on_finish = stops, eos, on_finish
        self.stream = _Stream(on_tokens, len(hist), max((len(s) for s in stops), default=1) - 1)

    def done(self) -> bool:
        return all(r is not None for r in self.reasons)

    def finish(self, i, why):
        self.reasons[i] = why
        self.stream.push(i, self.new[i], final=True)
        if self.on_finish is not None:
            self.on_finish(i, why)

    def at_n_ctx(self, n_ctx: int, sliding: bool) -> None:
        """Rows whose context is full stop ('n_ctx'), or with sliding keep their last n_ctx // 2 tokens."""
        for i, r in enumerate(self.hist):
            if self.reasons[i] is None and len(r) >= n_ctx:
                if sliding:
                    self.hist[i] = r[-max(n_ctx // 2, 1):]  # the full cache is rebuilt after this
                else:
                    self.finish(i, "n_ctx")

    def accept(self, batch, tokens, logits, output_scores: bool) -> None:
        """Append each unfinished row's next token; end rows at an eos token or a stop sequence."""
        for j, (i, t) in enumerate(zip(batch, tokens)):
            if self.reasons[i] is not None:
                continue
            if output_scores:
                self.scores[i].append(logits[j])
            self.hist[i].append(t)
            self.new[i].append(t)
            if t in self.eos:
                self.new[i].pop()
                self.finish(i, "eos")
                continue
            hit = next((s for s in self.stops if self.new[i][-len(s):] == s), None)
            if hit is not None:
                del self.new[i][-len(hit):]
                self.finish(i, "stop")
            else:
                self.stream.push(i, self.new[i])


def _prompts(input_ids, attention_mask, n_ctx: int, sliding: bool) -> list[list[int]]:
    hist = _as_rows(input_ids, attention_mask)
    for i, r in enumerate(hist):
        if not r:
            raise ValueError(f"prompt {i + 1} has no tokens")
        if len(r) > n_ctx:
            if not sliding:
                raise ValueError(f"prompt {i + 1} has {len(r)} tokens, more than n_ctx {n_ctx} (sliding=True, "
                                 "or --sliding, keeps its last n_ctx // 2)")
            hist[i] = r[-max(n_ctx // 2, 1):]
    return hist


class ModelDecoder:
    """The model's own cached forward and the tied LM head, under the caller's precision."""

    def __init__(self, transformer):
        self.transformer = transformer

    def forward(self, ids: torch.Tensor, cache, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.transformer(input_ids=ids, attention_mask=attention_mask, kv_cache=cache)[0]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return tied_logits(h, self.transformer.embed.weight)


def prefill(transformer, decoder, rows: list[list[int]], capacity: int | None = None,
            dtype: torch.dtype | None = None):
    """Encode the rows (left-padded to the longest) into a new cache of `capacity` columns (default
    n_ctx) in `dtype` (default the weights'): -> (cache, the last position's hidden states [B, C])."""
    dev = transformer.embed.weight.device
    L = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), L, dtype=torch.long, device=dev)
    real = torch.zeros(len(rows), L, dtype=torch.bool, device=dev)
    for j, r in enumerate(rows):
        ids[j, L - len(r):] = torch.tensor(r, device=dev)
        real[j, L - len(r):] = True
    kv = transformer.new_kv_cache(len(rows), dtype=dtype, capacity=capacity)
    return kv, decoder.forward(ids, kv, real)[:, -1]


@contextlib.contextmanager
def computing_in(transformer, dtype: torch.dtype | None, rows: int):
    """The generation's precision; yields its decoder (`forward(ids, cache, attention_mask)`,
    `logits(h)`). dtype None or the weights' dtype: the model's forward, as the caller's context.
    Lower (bf16): bf16 autocast for the whole generation, so each parameter is cast once (autocast's
    cache keeps the casts of parameters that require grad, as a model's do); with the `cpu` backend
    on a CPU with oneDNN, gpt1_fast.cpu_decode instead, on weights packed once."""
    we = transformer.embed.weight
    if dtype is None or dtype == we.dtype:
        yield ModelDecoder(transformer)
    elif cpu_decode.packable(transformer, dtype):
        yield cpu_decode.PackedDecoder(transformer, rows)
    else:
        with torch.autocast(we.device.type, dtype=dtype):
            yield ModelDecoder(transformer)


@torch.no_grad()
def generate(transformer, input_ids, max_new_tokens: int = 20, *, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, greedy: bool = False, eos_token_id=None, stop=None, n_vocab: int | None = None,
             generator: torch.Generator | None = None, attention_mask=None, use_cache: bool = True,
             sliding: bool = False, on_tokens=None, on_finish=None, output_scores: bool = False,
             dtype: torch.dtype | None = None) -> Generation:
    """Continue each prompt by up to max_new_tokens tokens.

    input_ids: a list of token-id lists (lengths may differ), or a [B, T] tensor (with attention_mask,
    0 where padding). greedy: argmax; else sample from softmax(logits / temperature), restricted to
    the top_k tokens (0: all) and to the top_p nucleus (1.0: all). eos_token_id: an id or ids that end
    a row; stop: token-id sequences that end a row (neither is returned). generator: the sampling
    RNG (same generator state -> same text). use_cache=False recomputes the whole prefix every step
    (the slow reference). on_tokens(row, ids): streaming callback (a row's tokens in order, held back
    while they could still be the start of a stop sequence); on_finish(row, reason) when a row ends.
    dtype: the compute dtype (torch.bfloat16: bf16 autocast for the whole generation, the weights cast
    once (on a CPU, packed once for oneDNN) and the key/value cache in bf16; default: the weights'
    dtype, under the caller's autocast).
    """
    if temperature <= 0 and not greedy:
        raise ValueError(f"temperature must be > 0 (or greedy=True), got {temperature}")
    if top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"top_k must be >= 0 and top_p in (0, 1], got top_k={top_k}, top_p={top_p}")
    n_ctx, we = transformer.n_ctx, transformer.embed.weight
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or ())
    rows = _Rows(_prompts(input_ids, attention_mask, n_ctx, sliding), on_tokens, on_finish,
                 [list(s) for s in (stop or ()) if len(s)], eos)
    mask = vocab_mask(we.size(0), transformer.pos_offset, n_vocab, we.device)
    pick = functools.partial(next_tokens, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                             generator=generator)
    with computing_in(transformer, dtype, len(rows.hist)) as decoder:
        _decode(transformer, rows, max_new_tokens, pick, mask, decoder, use_cache=use_cache, sliding=sliding,
                dtype=dtype, output_scores=output_scores)
    for i, r in enumerate(rows.reasons):
        if r is None:
            rows.finish(i, "length")
    out = Generation(rows.new, rows.reasons)
    if output_scores:
        out.scores = [torch.stack(s) if s else we.new_zeros(0, we.size(0)) for s in rows.scores]
    return out


def _decode(transformer, rows: _Rows, max_new_tokens: int, pick, mask, decoder, *, use_cache: bool, sliding: bool,
            dtype, output_scores: bool) -> None:
    """The decoding loop: one forward of one token per row and step, the cache rebuilt from the rows'
    tokens when it is full while a shorter row still has room (or every step without the cache)."""
    n_ctx = transformer.n_ctx
    batch, cache, last = [], None, None  # rows in the cache's batch (finished ones ride along until a rebuild)
    for step in range(max_new_tokens):
        rows.at_n_ctx(n_ctx, sliding)
        if rows.done():
            break
        if cache is None or not use_cache or cache.length >= n_ctx:
            batch = [i for i, r in enumerate(rows.reasons) if r is None]
            todo = [rows.hist[i] for i in batch]
            cache, last = prefill(transformer, decoder, todo, None if use_cache else max(map(len, todo)), dtype)
        logits = decoder.logits(last).float().add_(mask)  # in place: one [B, vocab] float32 buffer a step
        nxt = pick(logits)
        rows.accept(batch, nxt.tolist(), logits, output_scores)
        if use_cache and not rows.done() and step + 1 < max_new_tokens and cache.length < n_ctx:
            last = decoder.forward(nxt[:, None], cache)[:, -1]
