"""The .pt files a run leaves, read as models: a resume checkpoint (`<run>/checkpoints/step_N.pt`,
gpt1_fast.resume) and a fine-tuning run's `best_params.pt` (gpt1_fast.checkpoint).

A resume checkpoint holds the model's tensors and the fingerprint of the run's arguments. Its model
is described by, in order: the checkpoint's own "model_config" (a model folder's "gpt1_fast"
section, for runs that store it); for a fine-tuning run, the run's config.json beside checkpoints/
(layout, head, labels, vocabulary); for a pretraining run, the fingerprint (shapes, n_ctx) and the
table's rows (the vocabulary's size), with the vocabulary found beside the run (vocab.json +
merges.txt) or where its log's arguments point, and accepted only when its digest is the one the
fingerprint records. Files are read with `torch.load(weights_only=True)`: no pickled code runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import FORMAT as BEST_FORMAT
from .checkpoint import check_blob
from .errors import CheckpointError
from .folder_read import MODEL_KEYS, FolderInfo, json_object, parse_cfg, parse_head, parse_layout, section_fields
from .corpus import vocab_digest
from .layout import EmbeddingLayout
from .pretrained import resolve_vocab
from .resume import FORMAT as RESUME_FORMAT


def _load(p: Path):
    try:  # memory-mapped: reading the configuration does not read every tensor
        return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):  # a file of the legacy (not zip) format cannot be mapped: read it whole
            raise CheckpointError(f"{p}: damaged or not a torch checkpoint ({_first_line(e)})") from None
    except Exception as e:  # truncated zip, flipped bytes, not a torch file at all, a pickle with code
        raise CheckpointError(f"{p}: damaged or not a torch checkpoint ({_first_line(e)})") from None
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{p}: damaged or not a torch checkpoint ({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def _match_vocab(candidates, digest: str | None, what: str) -> tuple[tuple[str, str] | None, str | None]:
    """The first candidate pair of files whose digest is `digest` (any existing pair when None)."""
    tried = []
    for enc, bpe in candidates:
        if enc and bpe and Path(enc).is_file() and Path(bpe).is_file():
            if digest is None or vocab_digest(enc, bpe) == digest:
                return (str(enc), str(bpe)), None
            tried.append(f"{enc} + {bpe} (other contents)")
        elif enc or bpe:
            tried.append(f"{enc} + {bpe} (missing)")
    return None, (f"{what}: the vocabulary it was trained with was not found (tried: {'; '.join(tried) or 'nothing'}): "
                  "pass its files")


def _run_fields(meta: dict, f, lm_coef: float = 0.5) -> dict:
    """FolderInfo's fields from a fine-tuning run's configuration (its config.json, or the one inside
    best_params.pt): cfg, layout, head_type, task, label_names, encoder_path, bpe_path."""
    layout = parse_layout(meta.get("layout"), f)
    ht = meta.get("head_type")
    head = parse_head(ht, f, layout, lm_coef=lm_coef) if ht is not None and "_classify_" in layout.specials else None
    labels = meta.get("label_names")
    return dict(cfg=parse_cfg(meta.get("cfg"), f), layout=layout, head=head, task=meta.get("task"),
                label_names=None if labels is None else list(labels))


def _pretrain_fields(p: Path, sd: dict, fp: dict) -> dict:
    w, n_ctx = sd.get("transformer.embed.weight"), fp.get("n_ctx")
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or not isinstance(n_ctx, int) or not 0 < n_ctx < w.shape[0]:
        raise CheckpointError(f"{p}: expected a language model's tensors (transformer.embed.weight of more than "
                              f"n_ctx rows) and n_ctx in the fingerprint; found {tuple(getattr(w, 'shape', ()))} "
                              f"and n_ctx {n_ctx!r}")
    return dict(cfg=parse_cfg({k: fp[k] for k in MODEL_KEYS if k in fp}, p),
                layout=EmbeddingLayout(w.shape[0] - n_ctx, (), n_ctx))


def _pretrain_vocab(run: Path) -> list[tuple]:
    """Where a pretraining run's vocabulary may be: beside it, or where its log's arguments point."""
    found = [(run / "vocab.json", run / "merges.txt")]
    try:
        with open(run / "log.jsonl", encoding="utf-8") as f:
            args = json.loads(f.readline()).get("args") or {}
        found.append(resolve_vocab(args.get("model_dir") or "model/", args.get("encoder_path"), args.get("bpe_path")))
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # no log, or not one pretraining wrote: only the files beside the run
    return found


def _from_checkpoint(p: Path, blob: dict) -> FolderInfo:
    sd, fp = blob.get("model"), blob.get("fingerprint")
    if not isinstance(sd, dict) or not isinstance(fp, dict):
        raise CheckpointError(f"{p}: a checkpoint without the model's tensors or its fingerprint")
    run = p.parent.parent  # <run>/checkpoints/step_N.pt
    src, candidates = p, []
    if isinstance(blob.get("model_config"), dict):  # folder_save.model_section
        kw = section_fields(blob["model_config"], p)
        candidates = [tuple(blob["model_config"].get("vocab_paths") or (None, None))]
    elif "dataset" in fp:  # a fine-tuning run: its config.json (written when it started) describes the model
        src = run / "config.json"
        if not src.is_file():
            raise CheckpointError(f"{p}: a fine-tuning checkpoint; its run's config.json (expected at {src}) holds "
                                  "the layout and the head, and is missing")
        meta = json_object(src)
        kw = _run_fields(meta, src, fp.get("lm_coef", 0.5))
        candidates = [(meta.get("encoder_path"), meta.get("bpe_path"))]
    else:
        kw = _pretrain_fields(p, sd, fp)
        candidates = _pretrain_vocab(run)
    vocab, problem = _match_vocab(candidates, fp.get("vocab_digest"), str(p))
    return FolderInfo(p, "checkpoint", src, **{k: v for k, v in kw.items() if k not in ("options", "extra")},
                      vocab=vocab, vocab_problem=problem, options=dict(fp),
                      extra=dict(kw.get("extra") or {}, step=blob.get("step")), state=sd)


def _from_best_params(p: Path, blob: dict) -> FolderInfo:
    meta, sd = check_blob(p, blob)
    kw = _run_fields(meta, p)
    vocab, problem = _match_vocab([(meta.get("encoder_path"), meta.get("bpe_path"))], None, str(p))
    return FolderInfo(p, "best_params", p, **kw, vocab=vocab, vocab_problem=problem,
                      extra={k: meta[k] for k in ("n_updates", "score") if k in meta}, state=sd)


def read_pt(p: Path) -> FolderInfo:
    """A resume checkpoint or a best_params.pt, read as a model (tensors memory-mapped)."""
    blob = _load(p)
    fmt = blob.get("format") if isinstance(blob, dict) else None
    if fmt == RESUME_FORMAT:
        return _from_checkpoint(p, blob)
    if fmt == BEST_FORMAT:
        return _from_best_params(p, blob)
    raise CheckpointError(f"{p}: not a gpt1_fast checkpoint (expected the format {RESUME_FORMAT!r} of "
                          f"checkpoints/step_N.pt or {BEST_FORMAT!r} of best_params.pt, found {fmt!r})")

