"""Sample text from GPT-1's language model (the PyTorch port's generate.py, with a key/value cache).

    python -m gpt1_fast.generate                                     # interactive; 'q' quits
    python -m gpt1_fast.generate --prompt "The dog ran" --max_new_tokens 40 --top_k 10
    python -m gpt1_fast.generate --prompt "A" --prompt "B" --num_samples 3 --top_p 0.9 --temperature 0.8
    python -m gpt1_fast.generate --prompt_file prompts.txt --greedy --stop "."
    python -m gpt1_fast.generate --model_dir runs/rocstories/model --prompt "..."   # a fine-tuned model

--model_dir is any model the project reads: the release's model/, a transformers openai-gpt folder,
a model folder (pretrain's output, a fine-tuning run's model/), a run's checkpoints/step_<N>.pt.

All prompts (times --num_samples) are generated together, one forward per new token with a
key/value cache (in bf16, as the matrix products, where --dtype auto finds native bf16: a GPU, a CPU
with AVX-512-BF16, AMX or Arm BF16; --dtype fp32 for the reference path); the text is streamed to
the terminal as it is produced (one sample after another).
As the original: the position rows (and the special tokens) are masked with -1e12 before the
softmax, and each step samples from the top-k (default 10) of the last position's distribution.
A sample stops at --max_new_tokens, at a --stop string, or when the context (n_ctx tokens, prompt
included) is full; with --sliding it keeps going on its last n_ctx/2 tokens re-encoded from position 0,
which is not what the model was trained for (quality drops).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from . import options
from .cli import check_device, run_cli
from .errors import DataError, UsageError
from .folder import load_pretrained
from .layout import EmbeddingLayout
from .model import LMModel
from .sources import model_source


PROG = "python -m gpt1_fast.generate"


def build_parser():
    return options.build_parser(options.GENERATE, PROG, __doc__)


def load(args):
    """-> (model, text_encoder, n_vocab) ready to sample; n_vocab: ids at and above it are specials."""
    from .text import TextEncoder

    device = check_device(args.device)
    src = model_source(args)
    text_encoder = TextEncoder(*src.vocab)
    if src.info is None:  # from scratch: tokens | positions
        layout = EmbeddingLayout(len(text_encoder.encoder), (), src.n_ctx)
        model = LMModel(src.cfg, layout.size, layout.n_ctx)
    else:
        model, info = load_pretrained(args.model_dir, head=False, backend=args.backend, n_ctx=args.n_ctx,
                                      n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer, afn=args.afn)
        layout = info.layout
    return model.to(device).eval(), text_encoder, layout.n_vocab


class TerminalStream:
    """Shows the samples one after another, each as its tokens arrive (all are computed together):
    the current sample is written live, the others are buffered until their turn."""

    STOPS = {"n_ctx": "[stopped: context full, n_ctx {n_ctx}]", "stop": "[stopped: stop string]"}

    def __init__(self, text_encoder, prompts: list[str], n_ctx: int, out=None):
        self.te, self.prompts, self.n_ctx = text_encoder, prompts, n_ctx
        self.out = out or sys.stdout
        self.tokens = [[] for _ in prompts]
        self.reasons = [None] * len(prompts)
        self.shown, self.cur = "", -1
        self._advance()

    def text(self, row) -> str:
        return self.te.decode(self.tokens[row], skip_special=True)

    def _write(self, s):
        self.out.write(s)
        self.out.flush()

    def _show(self):
        text = self.text(self.cur)
        if text.startswith(self.shown) and len(text) > len(self.shown):
            self._write((" " if not self.shown else "") + text[len(self.shown):])
            self.shown = text

    def _advance(self):
        while True:
            self.cur += 1
            if self.cur >= len(self.prompts):
                return
            if len(self.prompts) > 1:
                self._write(f"=== sample {self.cur + 1}/{len(self.prompts)} ===\n")
            self._write(self.prompts[self.cur])
            self.shown = ""
            self._show()
            if self.reasons[self.cur] is None:
                return
            self._end()

    def _end(self):
        self._write("\n")
        note = self.STOPS.get(self.reasons[self.cur], "")
        if note:  # a status line: on standard error, so that standard output holds the texts alone
            print(note.format(n_ctx=self.n_ctx), file=sys.stderr, flush=True)

    def on_tokens(self, row, ids):
        self.tokens[row].extend(ids)
        if row == self.cur:
            self._show()

    def on_finish(self, row, reason):
        self.reasons[row] = reason
        if row == self.cur:
            self._show()
            self._end()
            self._advance()


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompt_file:
        f = Path(args.prompt_file)
        if not f.is_file():
            raise DataError(f"--prompt_file {f}: not found")
        try:
            lines = [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            line = f.read_bytes()[:e.start].count(b"\n") + 1
            raise DataError(f"--prompt_file {f}:{line}: expected UTF-8 text, found byte "
                             f"{e.object[e.start:e.start + 1]!r}") from None
        if not lines:
            raise DataError(f"--prompt_file {f}: no prompt in it (one prompt per line, blank lines skipped)")
        prompts += lines
    return prompts


def compute_dtype(model, args) -> torch.dtype:
    """--dtype for the model's device, by the inference rule (bf16 where the hardware has it natively)."""
    from .context import inference_settings

    return inference_settings(model.transformer.embed.weight.device, args.dtype).dtype


def run(model, text_encoder, n_vocab, prompts: list[str], args, generator, out=None) -> list[str]:
    """Generate for every prompt (x num_samples) at once, streaming; -> the continuations' texts."""
    ids = text_encoder.encode(prompts)
    n_ctx = model.transformer.n_ctx
    for i, row in enumerate(ids):
        if not row:
            raise UsageError(f"argument --prompt: prompt {i + 1} encodes to no tokens ({prompts[i]!r})")
        if n_ctx - len(row) < min(1, args.max_new_tokens) and not args.sliding:  # before anything is shown
            raise UsageError(f"argument --prompt: prompt {i + 1} has {len(row)} tokens, the model's context "
                             f"{n_ctx}: no room for a new token; shorten it, or pass --sliding (keeps its last "
                             f"{n_ctx // 2} tokens)")
    stops = text_encoder.encode(list(args.stop))
    for text, row in zip(args.stop, stops):
        if not row:
            raise UsageError(f"argument --stop: {text!r} encodes to no tokens (whitespace alone is no token); "
                             "give a word or a punctuation mark")
    rows = [r for r in ids for _ in range(args.num_samples)]
    shown = [p for p in prompts for _ in range(args.num_samples)]
    stream = TerminalStream(text_encoder, shown, model.transformer.n_ctx, out)
    try:
        g = model.generate(rows, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                           top_p=args.top_p, greedy=args.greedy, stop=stops, n_vocab=n_vocab, generator=generator,
                           sliding=args.sliding, on_tokens=stream.on_tokens, on_finish=stream.on_finish,
                           dtype=compute_dtype(model, args))
    except ValueError as e:  # a prompt longer than n_ctx
        raise UsageError(f"argument --prompt: {e}") from None
    return [text_encoder.decode(t, skip_special=True) for t in g.tokens]


def main(argv=None):
    from .deps import require

    args = options.parse(options.GENERATE, build_parser(), argv)
    require("text", "encoding the prompts")
    torch.manual_seed(args.seed)  # --from_scratch weights depend on it
    prompts = read_prompts(args)
    model, text_encoder, n_vocab = load(args)
    gen = torch.Generator(device=model.transformer.embed.weight.device).manual_seed(args.seed)
    if prompts:
        return run(model, text_encoder, n_vocab, prompts, args, gen)
    outs = []
    while True:
        try:
            text = input("Input some beginning words: ")
        except EOFError:
            break
        if text.strip() == "q":
            break
        if text.strip():
            outs += run(model, text_encoder, n_vocab, [text], args, gen)
    return outs


def cli(argv=None):
    """Command-line entry: bad input is one `error:` line on stderr, no traceback (2: a flag, 1: a file
    or a missing package; any other ValueError comes from the vocabulary's files)."""
    run_cli(main, argv, PROG, file_errors=(ValueError,))


if __name__ == "__main__":
    cli()
