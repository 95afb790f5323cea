"""What the estimators (gpt1_fast.api) read and write: their inputs (lists, pandas columns, pairs),
and a fitted estimator on disk.

A fitted estimator is saved as a model folder (gpt1_fast.folder: config.json with the estimator's
parameters and classes, model.safetensors with the task head, vocab.json + merges.txt), the format
every command and transformers read; `load` reads such a folder, and the folders of earlier versions.
"""
from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError


class EstimatorIO:
    """save / load / export_hf of a fitted estimator (mixed into gpt1_fast.api.GPTEstimator)."""

    def save(self, path) -> Path:
        """The fitted estimator as a model folder (which `load`, the commands and transformers read)."""
        from sklearn.utils.validation import check_is_fitted

        from .folder import save_pretrained

        check_is_fitted(self)
        classes = [_jsonable(c) for c in self.classes_] if hasattr(self, "classes_") else None
        return save_pretrained(self.model_, path, layout=self.layout_, vocab_paths=self.vocab_paths_,
                               task=type(self).__name__, head_type=self._head_type(), label_names=classes,
                               options=self.get_params(),
                               extra={"estimator": type(self).__name__, "pairs": getattr(self, "pairs_", None),
                                      "n_ctx_cap": self.n_ctx_cap_})

    def export_hf(self, path) -> Path:
        """The same folder: transformers loads it as OpenAIGPTDoubleHeadsModel (gpt1_fast.hf_head says
        how each family's logits read there)."""
        return self.save(path)

    @classmethod
    def load(cls, path, device=None):
        """An estimator saved by `save` (or by an earlier version), ready to predict."""
        from .folder import load_pretrained, read_config

        info = read_config(path)
        name = info.extra.get("estimator")
        est_cls = _subclass_named(cls, name)
        if est_cls is None:
            what = f"a {name}" if name else "no estimator (a model folder without one's parameters)"
            raise CheckpointError(f"{info.source}: holds {what}, not a {cls.__name__}")
        params = {k: v for k, v in info.options.items() if k in est_cls._get_param_names()}
        est = est_cls(**dict(params, **({"device": device} if device else {})))
        est._restore(info, load_pretrained(path, backend=est.backend)[0])
        return est

    def _restore(self, info, model) -> None:
        from . import options
        from .context import RunContext
        from .pretrained import LazyTextEncoder

        self.vocab_paths_ = info.require_vocab()
        self.text_encoder_ = LazyTextEncoder(*self.vocab_paths_)
        self.layout_ = info.layout
        self.n_ctx_cap_ = info.extra.get("n_ctx_cap") or max(512, info.layout.n_ctx)
        if info.extra.get("pairs") is not None:
            self.pairs_ = info.extra["pairs"]
        if info.label_names is not None:
            self._set_classes(info.label_names)
        args = options.check(options.ESTIMATOR, self.get_params())
        self.model_ = model.to(RunContext(args, distributed=False).device).eval()


def _subclass_named(cls, name):
    """`cls` or the subclass of it (at any depth) called `name`, else None."""
    todo = [cls]
    while todo:
        c = todo.pop()
        if c.__name__ == name:
            return c
        todo += c.__subclasses__()
    return None


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
