"""scikit-learn estimators over the task layer: fine-tune GPT-1 without writing a training script.

    from gpt1_fast import Classifier
    clf = Classifier(n_iter=3).fit(texts, labels, eval_set=(val_texts, val_labels))
    clf.predict(["a new text"]); clf.predict_proba(["a new text"])
    clf.save("my_model/"); Classifier.load("my_model/").predict(...); clf.export_hf("hf_model/")

Estimators (the paper's Figure 1 input transforms, gpt1_fast.tasks):
  Classifier      X: texts                       y: labels (any hashable)
  Entailment      X: (premise, hypothesis) pairs y: labels
  Similarity      X: (a, b) pairs, both orders   y: labels
  MultipleChoice  X: (context, [answers]) pairs  y: index of the right answer
  Regressor       X: texts, or (a, b) pairs      y: numbers (squared error)
X may be a Python list, a pandas Series, or (pairs) a two-column DataFrame. Every keyword is an option
of `python -m gpt1_fast.train` (same name, default and accepted range: gpt1_fast.options); the
pretrained weights are loaded from `model_dir` unless `from_scratch=True`. They are scikit-learn
estimators: `clone`, `get_params` / `set_params`, `check_is_fitted`, `is_classifier` /
`is_regressor` and `NotFittedError` behave as for any other.
"""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from . import options
from .context import RunContext
from .estimator_io import EstimatorIO, as_list, check_texts, pairs, texts
from .inference import task_logits
from .layout import PAPER_SPECIALS, EmbeddingLayout
from .model import DoubleHeadModel
from .sources import Source, model_source, transferred_blocks
from .tasks.memory import InMemoryTask
from .tasks.trainer import TrainConfig, Trainer, updates_per_epoch


def _schema_init(entry: options.Entry):
    """An __init__ taking exactly the entry's options as keywords (scikit-learn reads the signature:
    `get_params`, `clone`, the repr), storing them unchecked, as scikit-learn wants; fit checks them."""
    def __init__(self, **params):
        unknown = sorted(set(params) - set(entry.names))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}")
        for n in entry.names:
            setattr(self, n, params.get(n, entry.default(n)))

    kw = inspect.Parameter.KEYWORD_ONLY
    __init__.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(n, kw, default=entry.default(n)) for n in entry.names])
    return __init__


class GPTEstimator(EstimatorIO, BaseEstimator):
    """fit / predict shared by the estimators; subclasses give the family, the input fields and the head."""

    family: str = ""
    metrics: tuple[str, ...] = ("accuracy",)
    __init__ = _schema_init(options.ESTIMATOR)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    # ---------------------------------------------------------------------------------- inputs
    def _fields(self, X, what="X") -> dict[str, list]:
        raise NotImplementedError

    def _head_type(self):
        raise NotImplementedError

    def _family(self) -> str:
        return self.family

    def _labels(self, y, n, what="y") -> np.ndarray:
        y = as_list(y, what)
        if len(y) != n:
            raise ValueError(f"{what} has {len(y)} labels for {n} examples")
        unknown = [v for v in y if v not in self._label_index]
        if unknown:
            raise ValueError(f"{what}: label {unknown[0]!r} was not seen by fit (known: {list(self.classes_)})")
        return np.asarray([self._label_index[v] for v in y], dtype=np.int64)

    def _classes(self, X, y: list) -> list:
        classes = sorted(set(y), key=lambda v: (type(v).__name__, v))
        if not classes:
            raise ValueError("y is empty: fit needs labelled examples")
        if len(classes) < 2:
            raise ValueError(f"y has one class ({classes[0]!r}): a classifier needs at least two")
        return classes

    def _set_classes(self, classes):
        self.classes_ = list(classes)
        self._label_index = {c: i for i, c in enumerate(self.classes_)}

    def _task(self, has_valid: bool = False) -> InMemoryTask:
        return InMemoryTask(type(self).__name__, self._family(), self._head_type(), self.metrics,
                            None if not hasattr(self, "classes_") else tuple(map(str, self.classes_)), has_valid)

    # -------------------------------------------------------------------------------------- fit
    def fit(self, X, y, eval_set=None):
        """Fine-tune on (X, y); eval_set=(X_val, y_val) is scored after every epoch (self.history_)."""
        args = options.check(options.ESTIMATOR, self.get_params())
        src = model_source(args, name=lambda n: n)
        ctx = RunContext(args, distributed=False)
        ctx.seed()
        self._prepare(src, X, y)
        splits = {"train": (self._fields(X), self._labels(y, len(as_list(X, "X"))))}
        if eval_set is not None:
            if len(eval_set) != 2:
                raise ValueError("eval_set must be (X_val, y_val)")
            Xv = eval_set[0]
            splits["valid"] = (self._fields(Xv, "eval_set X"), self._labels(eval_set[1], len(as_list(Xv)), "eval_set y"))
        task = self._task(has_valid=eval_set is not None)
        self.n_ctx_cap_ = src.n_ctx
        data = task.data(splits, self.text_encoder_, EmbeddingLayout(self.text_encoder_.n_vocab, PAPER_SPECIALS, src.n_ctx))
        n_train = len(data.splits["train"])
        if n_train < args.n_batch:
            raise ValueError(f"{n_train} training examples make no batch of n_batch={args.n_batch}: lower n_batch")
        self.layout_ = data.layout
        model = self._build_model(args, src).to(ctx.device)
        opt = ctx.optimizer(model, t_total=updates_per_epoch(n_train, args.n_batch) * args.n_iter,
                            schedule=args.lr_schedule, warmup=args.lr_warmup)
        trainer = Trainer(task, data, model, opt, TrainConfig.from_args(args, self._verbose(args)), ctx)
        self.history_ = trainer.fit()
        self.model_ = model.eval()
        return self

    def _verbose(self, args) -> bool:
        return bool(args.verbose)  # a bar on a terminal, else a progress line every 30 s

    def _prepare(self, src: Source, X, y) -> None:
        """The vocabulary, the text encoder and (classifiers) the classes, before the examples are encoded."""
        from .pretrained import LazyTextEncoder

        self.vocab_paths_ = src.vocab
        self.text_encoder_ = LazyTextEncoder(*self.vocab_paths_)
        self._set_classes(self._classes(X, as_list(y, "y")))

    def _build_model(self, args, src: Source) -> DoubleHeadModel:
        """The task's model on the fitted layout, started from model_dir's model unless from_scratch."""
        lay = self.layout_
        model = DoubleHeadModel(src.cfg, lay.clf, self._head_type(), lay.size, lay.n_ctx, lm_coef=args.lm_coef)
        if src.info is not None:
            from .folder import init_from

            init_from(model, args.model_dir, layout=lay, n_transfer=transferred_blocks(args.n_transfer, src.cfg.n_layer))
        return model

    # ---------------------------------------------------------------------------------- predict
    def decision_function(self, X) -> np.ndarray:
        """Task-head outputs: [N, n_classes] logits, [N, n_choices] scores, or [N] regression scores.
        Texts longer than the fitted context are cut by the rule training used (a warning counts them)."""
        check_is_fitted(self)
        args = options.check(options.ESTIMATOR, self.get_params())
        enc, n_cut = self._task().encode(self._fields(X), None, self.text_encoder_, self.layout_, self.n_ctx_cap_)
        if n_cut:
            warnings.warn(f"{n_cut} of {len(enc)} examples are longer than the {self.layout_.n_ctx} positions this "
                          "model was fitted with: cut as in training", stacklevel=2)
        ctx = RunContext(args, distributed=False)
        self.model_.to(ctx.device)
        logits = task_logits(self.model_, enc, self.layout_, batch_size=args.n_batch_eval or 2 * args.n_batch,
                             padding="batch", settings=ctx.inference)
        return logits.numpy()

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        return np.asarray([self.classes_[i] for i in scores.argmax(-1)])

    def predict_proba(self, X) -> np.ndarray:
        return torch.from_numpy(self.decision_function(X)).double().softmax(-1).numpy()


# ------------------------------------------------------------------------------------ estimators
class Classifier(ClassifierMixin, GPTEstimator):
    """Text classification: `start text extract` -> linear head over the labels (SST-2, CoLA)."""
    family = "classification"

    def _fields(self, X, what="X"):
        return {"text": texts(X, what)}

    def _head_type(self):
        return ("classification", len(self.classes_))


class Entailment(ClassifierMixin, GPTEstimator):
    """Premise/hypothesis pairs: `start premise delim hypothesis extract` -> labels (SNLI, MNLI, RTE)."""
    family = "entailment"

    def _fields(self, X, what="X"):
        a, b = pairs(X, what)
        return {"premise": a, "hypothesis": b}

    def _head_type(self):
        return ("classification", len(self.classes_))


class Similarity(ClassifierMixin, GPTEstimator):
    """Unordered pairs: both orders through the model, states added -> labels (QQP, MRPC)."""
    family = "similarity"

    def _fields(self, X, what="X"):
        a, b = pairs(X, what)
        return {"text_a": a, "text_b": b}

    def _head_type(self):
        return ("similarity", len(self.classes_))


class MultipleChoice(ClassifierMixin, GPTEstimator):
    """(context, [answer, ...]) -> index of the right answer (Story Cloze, RACE); every example has
    the same number of answers (at predict time too)."""
    family = "multiple_choice"

    def _fields(self, X, what="X"):
        rows = as_list(X, what)
        ctx, choices = [], []
        for i, r in enumerate(rows):
            if not (isinstance(r, (tuple, list)) and len(r) == 2 and isinstance(r[1], (tuple, list))):
                raise ValueError(f"{what}[{i}]: expected (context, [answer, ...]), got {r!r}")
            ctx.append(r[0])
            choices.append(list(r[1]))
        check_texts(ctx, f"{what} context")
        n = sorted({len(c) for c in choices})
        if len(n) > 1:
            raise ValueError(f"{what}: every example needs the same number of answers, found {n}")
        if hasattr(self, "classes_") and n and n[0] != len(self.classes_):
            raise ValueError(f"{what}: {n[0]} answers per example, this model was fitted with {len(self.classes_)}")
        for i, c in enumerate(choices):
            check_texts(c, f"{what}[{i}] answers")
        return {"context": ctx, "choices": choices}

    def _classes(self, X, y):
        n = len(self._fields(X)["choices"][0])
        for i, v in enumerate(y):
            if not (isinstance(v, (int, np.integer)) and 0 <= v < n):
                raise ValueError(f"y[{i}]: expected the index of the right answer (0..{n - 1}), got {v!r}")
        return list(range(n))

    def _head_type(self):
        return "multiple_choice"


class Regressor(RegressorMixin, GPTEstimator):
    """A score for a text (`start text extract` -> one output) or for an unordered pair of texts
    (both orders, as STS-B); squared-error loss. score() is R^2, as every scikit-learn regressor."""
    metrics = ("pearson",)

    def _fields(self, X, what="X"):
        rows = as_list(X, what)
        is_pairs = bool(rows) and not isinstance(rows[0], str)
        if hasattr(self, "pairs_") and is_pairs != self.pairs_:
            raise ValueError(f"{what}: this Regressor was fitted on {'pairs of texts' if self.pairs_ else 'texts'}")
        if is_pairs:
            a, b = pairs(X, what)
            return {"text_a": a, "text_b": b}
        return {"text": texts(X, what)}

    def _prepare(self, src, X, y):
        for attr in ("pairs_", "classes_"):
            self.__dict__.pop(attr, None)
        self.pairs_ = "text_a" in self._fields(X)
        super()._prepare(src, X, y)

    def _set_classes(self, classes):
        pass  # numbers, not classes

    def _classes(self, X, y):
        return []

    def _labels(self, y, n, what="y") -> np.ndarray:
        y = as_list(y, what)
        if len(y) != n:
            raise ValueError(f"{what} has {len(y)} labels for {n} examples")
        try:
            values = np.asarray([float(v) for v in y], dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: a Regressor needs numbers, got {y[:3]!r}...") from None
        if not np.isfinite(values).all():
            raise ValueError(f"{what}[{int(np.argmin(np.isfinite(values)))}]: expected a finite number, got "
                             f"{y[int(np.argmin(np.isfinite(values)))]!r}")
        return values

    def _family(self):
        return "similarity" if self.pairs_ else "classification"

    def _head_type(self):
        return "similarity" if self.pairs_ else "regression"

    def predict(self, X) -> np.ndarray:
        return self.decision_function(X).astype(np.float64)

    def predict_proba(self, X):
        raise AttributeError("a Regressor has no predict_proba: use predict")


ESTIMATORS = {c.__name__: c for c in (Classifier, Entailment, Similarity, MultipleChoice, Regressor)}
