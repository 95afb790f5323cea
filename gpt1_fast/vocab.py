"""Learn a BPE vocabulary from your own texts, in the release's two-file format.

    python -m gpt1_fast.vocab --data corpus/ more.jsonl --merges 40000 --out my_model/

Reads the inputs exactly as pretraining does (gpt1_fast.corpus: text files, folders of *.txt/*.jsonl,
JSONL with a "text" field), pre-tokenizes them as TextEncoder does (ftfy, standardize, spaCy) and
learns the merges with gpt1_fast.text.learn_bpe. Writes OUT/encoder_bpe_40000.json and
OUT/vocab_40000.bpe: the release's file names whatever the number of merges, so that `--model_dir OUT`
(gpt1_fast.train, generate, pretrain) finds them as it finds the release's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ENCODER_NAME, BPE_NAME = "encoder_bpe_40000.json", "vocab_40000.bpe"  # the release's names


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m gpt1_fast.vocab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True, metavar="PATH",
                    help="text files (one document each), folders (every *.txt and *.jsonl under them, sorted) "
                         "or JSONL files (one document per line, a JSON object with a \"text\" field)")
    ap.add_argument("--merges", type=int, default=40000, metavar="N",
                    help="number of BPE merges to learn, >= 1 (default 40000, as the paper); fewer are written "
                         "when the texts run out of pairs. The vocabulary has about 2 x characters + N + 2 entries "
                         "and must stay below 65,536 ids for pretraining's uint16 token files")
    ap.add_argument("--out", required=True, metavar="DIR",
                    help=f"folder for {ENCODER_NAME} and {BPE_NAME} (created if missing; use it as --model_dir)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace a vocabulary already in --out (refused otherwise: encoded data and models "
                         "made with it would no longer match)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .corpus import CorpusError, list_files, read_documents

    def fail(msg):
        print(f"error: {msg}", file=sys.stderr)
        return 2

    if args.merges < 1:
        return fail(f"--merges must be at least 1, got {args.merges}")
    out = Path(args.out)
    enc, bpe = out / ENCODER_NAME, out / BPE_NAME
    if out.exists() and not out.is_dir():
        return fail(f"--out {out} is a file, expected a folder")
    existing = [p for p in (enc, bpe) if p.exists()]
    if existing and not args.overwrite:
        return fail(f"--out {out} already holds a vocabulary ({existing[0].name}); pass --overwrite to replace it")
    try:
        list_files(args.data)  # every input exists before any work
        from .text import learn_bpe

        encoder = learn_bpe(read_documents(args.data), args.merges, enc, bpe, verbose=not args.quiet)
    except CorpusError as e:
        return fail(str(e))
    except ImportError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    n_merges = len(Path(bpe).read_text(encoding="utf-8").split("\n")) - 2
    note = "" if n_merges == args.merges else f" (the texts had pairs for {n_merges} of the {args.merges} asked)"
    print(f"wrote {enc} ({len(encoder):,} tokens) and {bpe} ({n_merges:,} merges){note}; "
          f"use --model_dir {out}")
    if len(encoder) > 65536:
        print(f"warning: {len(encoder):,} ids do not fit pretraining's uint16 token files; use fewer --merges",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
