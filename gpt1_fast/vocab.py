"""Learn a BPE vocabulary from your own texts, in the release's two-file format.

    python -m gpt1_fast.vocab --data corpus/ more.jsonl --merges 40000 --out my_model/

Reads the inputs exactly as pretraining does (gpt1_fast.corpus: text files, folders of *.txt/*.jsonl,
JSONL with a "text" field), pre-tokenizes them as TextEncoder does (ftfy, standardize, spaCy) and
learns the merges with gpt1_fast.text.learn_bpe. Writes OUT/encoder_bpe_40000.json and
OUT/vocab_40000.bpe: the release's file names whatever the number of merges, so that `--model_dir OUT`
(gpt1_fast.train, generate, pretrain) finds them as it finds the release's.
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import options
from .cli import run_cli
from .errors import DataError, UsageError

PROG = "python -m gpt1_fast.vocab"
ENCODER_NAME, BPE_NAME = "encoder_bpe_40000.json", "vocab_40000.bpe"  # the release's names


def build_parser():
    return options.build_parser(options.VOCAB, PROG, __doc__)


def check(args) -> tuple[Path, Path]:
    """Every input before any work: the files exist and hold some text, --out takes a new vocabulary."""
    from .corpus import list_files, read_documents
    from .deps import require

    out = Path(args.out)
    enc, bpe = out / ENCODER_NAME, out / BPE_NAME
    existing = [p for p in (enc, bpe) if p.exists()]
    if existing and not args.overwrite:
        raise UsageError(f"argument --out: {out} already holds a vocabulary ({existing[0].name}); pass --overwrite "
                         "to replace it")
    list_files(args.data)  # every input exists
    if not any(doc.strip() for doc in read_documents(args.data)):
        raise DataError(f"{', '.join(args.data)}: no text to learn a vocabulary from (empty, or only blank lines)")
    require("text", "learning a vocabulary (texts are pre-tokenized as TextEncoder does)")
    return enc, bpe


def main(argv=None) -> dict:
    args = options.parse(options.VOCAB, build_parser(), argv)
    enc, bpe = check(args)
    from .corpus import read_documents
    from .text import learn_bpe

    encoder = learn_bpe(read_documents(args.data), args.merges, enc, bpe, verbose=not args.quiet and sys.stderr.isatty())
    n_merges = len(Path(bpe).read_text(encoding="utf-8").split("\n")) - 2
    note = "" if n_merges == args.merges else f" (the texts had pairs for {n_merges} of the {args.merges} asked)"
    print(f"wrote {enc} ({len(encoder):,} tokens) and {bpe} ({n_merges:,} merges){note}; use --model_dir {args.out}")
    if len(encoder) > 65536:
        print(f"warning: {len(encoder):,} ids do not fit pretraining's uint16 token files; use fewer --merges",
              file=sys.stderr)
    return dict(encoder=str(enc), bpe=str(bpe), n_tokens=len(encoder), n_merges=n_merges)


def cli(argv=None) -> None:
    """Command-line entry: bad input is one `error:` line, no traceback (2: a flag, 1: a file or a
    missing package, 130: Ctrl-C, nothing written)."""
    run_cli(main, argv, PROG, interrupted="interrupted: no vocabulary written")


if __name__ == "__main__":
    cli()
