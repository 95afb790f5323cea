"""What the estimators (gpt1_fast.api) read and write: their inputs (lists, pandas columns, pairs),
and a fitted estimator on disk.

A saved folder holds `config.json` (the estimator's parameters, model config, layout, classes, the
vocabulary files' paths and SHA-256) and `model.safetensors` (the weights; loading runs no pickle).
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import CheckpointError
from .fileio import atomic_write_bytes, atomic_write_text, sha256_file
from .layout import EmbeddingLayout

FORMAT = "gpt1_fast-estimator-v1"


class EstimatorIO:
    """save / load / export_hf of a fitted estimator (mixed into gpt1_fast.api.GPTEstimator)."""

    def save(self, path) -> Path:
        """A folder with config.json and model.safetensors (the vocabulary is referenced by path and SHA-256)."""
        from safetensors.torch import save
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()
              if k != "lm_head.decoder.weight" and not k.endswith(".attn.b")}  # tied / constant
        meta = {"format": FORMAT, "estimator": type(self).__name__, "params": self.get_params(),
                "layout": self.layout_.to_dict(),
                "classes": [_jsonable(c) for c in self.classes_] if hasattr(self, "classes_") else None,
                "pairs": getattr(self, "pairs_", None),
                "vocabulary": {"encoder_path": str(Path(self.vocab_paths_[0]).resolve()),
                               "bpe_path": str(Path(self.vocab_paths_[1]).resolve()),
                               "sha256": [sha256_file(p) for p in self.vocab_paths_]}}
        atomic_write_bytes(path / "model.safetensors", save(sd, {"format": "pt"}))
        atomic_write_text(path / "config.json", json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path, device=None):
        """An estimator saved by `save`, ready to predict (weights read with safetensors: no pickle)."""
        path = Path(path)
        meta = _read_meta(path, cls)
        est_cls = _subclass_named(cls, meta.get("estimator"))
        if est_cls is None:
            raise CheckpointError(f"{path / 'config.json'}: holds a {meta.get('estimator')}, not a {cls.__name__}")
        est = est_cls(**dict(meta["params"], **({"device": device} if device else {})))
        est._restore(meta, path)
        return est

    def _restore(self, meta: dict, path: Path) -> None:
        from . import options
        from .pretrained import LazyTextEncoder

        paths = _checked_vocabulary(meta["vocabulary"])
        self.vocab_paths_, self.text_encoder_ = paths, LazyTextEncoder(*paths)
        self.layout_ = EmbeddingLayout.from_dict(meta["layout"])
        if meta.get("pairs") is not None:
            self.pairs_ = meta["pairs"]
        if meta.get("classes") is not None:
            self._set_classes(meta["classes"])
        args = options.check(options.ESTIMATOR, self.get_params())
        model = self._build_model(args, pretrained=False)
        _load_weights(model, path / "model.safetensors")
        from .context import RunContext

        self.model_ = model.to(RunContext(args, distributed=False).device).eval()

    def export_hf(self, path) -> Path:
        """The transformer (and a multiple-choice head) as a Hugging Face openai-gpt folder."""
        from sklearn.utils.validation import check_is_fitted

        from .weights import export_hf

        check_is_fitted(self)
        return export_hf(self.model_, path)


def _subclass_named(cls, name):
    """`cls` or the subclass of it (at any depth) called `name`, else None."""
    todo = [cls]
    while todo:
        c = todo.pop()
        if c.__name__ == name:
            return c
        todo += c.__subclasses__()
    return None


def _read_meta(path: Path, cls) -> dict:
    cfg_file, weights = path / "config.json", path / "model.safetensors"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not found (a folder written by {cls.__name__}.save)")
    try:
        meta = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_file}: format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                              f"expected {FORMAT!r}")
    return meta


def _checked_vocabulary(voc: dict) -> tuple[str, str]:
    paths = (voc["encoder_path"], voc["bpe_path"])
    for p, digest in zip(paths, voc["sha256"]):
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: the vocabulary file this model was trained with is missing")
        if sha256_file(p) != digest:
            raise CheckpointError(f"{p}: the vocabulary file changed since the model was saved (SHA-256 differs)")
    return paths


def _load_weights(model, weights: Path) -> None:
    from safetensors.torch import load_file

    try:
        sd = load_file(str(weights))
    except Exception as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "lm_head.decoder.weight" and not k.endswith(".attn.b")]
    if missing or unexpected:
        raise CheckpointError(f"{weights}: missing tensors {missing[:3]}, unexpected {unexpected[:3]}")


# ---------------------------------------------------------------------------------------- inputs
def as_list(X, what="X") -> list:
    if X is None:
        raise ValueError(f"{what} is None")
    if hasattr(X, "to_numpy") and getattr(X, "ndim", 1) == 2:  # pandas DataFrame: rows as tuples
        return [tuple(r) for r in X.to_numpy().tolist()]
    if hasattr(X, "tolist"):  # pandas Series, NumPy array
        return X.tolist()
    if isinstance(X, (str, bytes)):
        raise TypeError(f"{what} must be a list of examples, got a single string")
    return list(X)


def check_texts(texts_, what) -> None:
    for i, t in enumerate(texts_):
        if not isinstance(t, str):
            raise ValueError(f"{what}[{i}]: expected a string, got {type(t).__name__} {t!r}")
        if not t.strip():
            raise ValueError(f"{what}[{i}] is an empty string")


def texts(X, what="X") -> list[str]:
    out = as_list(X, what)
    if not out:
        raise ValueError(f"{what} is empty")
    check_texts(out, what)
    return out


def pairs(X, what="X") -> tuple[list[str], list[str]]:
    rows = as_list(X, what)
    if not rows:
        raise ValueError(f"{what} is empty")
    for i, r in enumerate(rows):
        if not (isinstance(r, (tuple, list)) and len(r) == 2):
            raise ValueError(f"{what}[{i}]: expected a pair of texts (a, b), got {r!r}")
    a, b = [r[0] for r in rows], [r[1] for r in rows]
    check_texts(a, f"{what} first texts")
    check_texts(b, f"{what} second texts")
    return a, b


def _jsonable(v):
    return v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v
