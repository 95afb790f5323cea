"""A scikit-learn style facade over the task layer: fine-tune GPT-1 without writing a training script.

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
X may be a Python list, a pandas Series, or (pairs) a two-column DataFrame. Every training option of
`python -m gpt1_fast.train` is a keyword (same names, same defaults); the pretrained weights are
loaded from `model_dir` unless `from_scratch=True`.

A saved folder holds `config.json` (estimator parameters, model config, layout, labels, the
vocabulary files' paths and SHA-256), `model.safetensors` (the weights; loading runs no pickle).
"""
from __future__ import annotations

import inspect
import json
import math
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .config import GPTConfig
from .fileio import atomic_write_bytes, atomic_write_text, sha256_file
from .layout import PAPER_SPECIALS, EmbeddingLayout
from .model import DoubleHeadModel

FORMAT = "gpt1_fast-estimator-v1"


class _ScoreHead(torch.nn.Module):
    """A one-output classification head read as a score [B] (the single-text regressor)."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, h, x):
        return self.head(h, x).view(-1)


class GPTEstimator:
    """Shared fit / predict / save / load. Subclasses give the family, the input check and the head."""

    family: str = ""
    regression = False

    def __init__(self, *, model_dir="model/", from_scratch=False, encoder_path=None, bpe_path=None, n_transfer=12,
                 n_ctx=512, n_embd=768, n_head=12, n_layer=12, embd_pdrop=0.1, attn_pdrop=0.1, resid_pdrop=0.1,
                 clf_pdrop=0.1, afn="gelu", seed=42, n_iter=3, n_batch=64, max_grad_norm=1.0, lr=6.25e-5,
                 lr_warmup=0.002, l2=0.01, vector_l2=False, lr_schedule="warmup_linear", lm_coef=0.5, b1=0.9,
                 b2=0.999, e=1e-8, n_valid=374, padding="batch", device=None, backend="auto", dtype="auto",
                 compile=None, activation_checkpointing=False, n_batch_eval=None, verbose=True):
        for k, v in locals().items():
            if k not in ("self", "__class__"):
                setattr(self, k, v)

    # ------------------------------------------------------------------------ scikit-learn protocol
    @classmethod
    def _param_names(cls):
        return [p for p in inspect.signature(GPTEstimator.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self._param_names():
                raise ValueError(f"unknown parameter {k!r} for {type(self).__name__}")
            setattr(self, k, v)
        return self

    def __repr__(self):
        changed = {k: v for k, v in self.get_params().items()
                   if v != inspect.signature(GPTEstimator.__init__).parameters[k].default}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # ---------------------------------------------------------------------------------- inputs
    def _fields(self, X, what="X") -> dict[str, list]:
        """X -> the family's text fields (lists of strings), checked."""
        raise NotImplementedError

    def _labels(self, y, n, what="y") -> np.ndarray:
        y = _as_list(y, what)
        if len(y) != n:
            raise ValueError(f"{what} has {len(y)} labels for {n} examples")
        if self.regression:
            try:
                return np.asarray([float(v) for v in y], dtype=np.float32)
            except (TypeError, ValueError):
                raise ValueError(f"{what}: a Regressor needs numbers, got {y[:3]!r}...") from None
        unknown = [v for v in y if v not in self._label_index]
        if unknown:
            raise ValueError(f"{what}: label {unknown[0]!r} was not seen by fit (known: {list(self.classes_)})")
        return np.asarray([self._label_index[v] for v in y], dtype=np.int64)

    def _encode(self, X, y=None, what="X"):
        from .tasks import classification, entailment, multiple_choice, similarity
        from .tasks.common import Encoded

        fields = self._fields(X, what)
        n = len(next(iter(fields.values())))
        labels = None if y is None else self._labels(y, n, what.replace("X", "y"))
        ids = {}
        for k, texts in fields.items():
            flat = [t for row in texts for t in row] if k == "choices" else texts
            enc = self.text_encoder_.encode(flat)
            if k == "choices":
                it = iter(enc)
                enc = [[next(it) for _ in row] for row in texts]
            ids[k] = enc
        module = {"classification": classification, "entailment": entailment, "similarity": similarity,
                  "multiple_choice": multiple_choice}[self._transform_family(fields)]
        seqs = module.transform(ids, self.layout_)
        return Encoded.from_sequences(seqs, labels, [str(i) for i in range(n)], self.layout_.n_ctx)

    def _transform_family(self, fields) -> str:
        return self.family

    def _classes(self, X, y: list) -> list:
        return sorted(set(y), key=_sort_key)

    def _set_classes(self, classes):
        self.classes_ = list(classes)
        self._label_index = {c: i for i, c in enumerate(self.classes_)}

    # ------------------------------------------------------------------------------------ model
    def _device(self):
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def _vocab_paths(self):
        from .pretrained import resolve_vocab

        return resolve_vocab(self.model_dir, self.encoder_path, self.bpe_path)

    def _gpt_config(self) -> GPTConfig:
        return GPTConfig(n_embd=self.n_embd, n_head=self.n_head, n_layer=self.n_layer, embd_pdrop=self.embd_pdrop,
                         attn_pdrop=self.attn_pdrop, resid_pdrop=self.resid_pdrop, afn=self.afn,
                         clf_pdrop=self.clf_pdrop, backend=self.backend,
                         activation_checkpointing=self.activation_checkpointing)

    def _head_type(self):
        raise NotImplementedError

    def _build_model(self) -> DoubleHeadModel:
        lay = self.layout_
        model = DoubleHeadModel(self._gpt_config(), lay.clf, self._head_type(), lay.size, lay.n_ctx,
                                lm_coef=self.lm_coef)
        if self.regression and self._head_type() != "similarity":  # one output read as a score
            model.task_head = _ScoreHead(model.task_head)
            model.regression = True
        return model

    def _text_encoder(self, paths):
        from .text import TextEncoder

        return TextEncoder(*paths)

    # -------------------------------------------------------------------------------------- fit
    def fit(self, X, y, eval_set=None):
        """Fine-tune on (X, y); eval_set=(X_val, y_val) is scored after every epoch (self.history_)."""
        from .opt import OpenAIAdam
        from .tasks.trainer import RunPaths, TrainConfig, Trainer

        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)
        self.vocab_paths_ = self._vocab_paths()
        if not self.from_scratch:
            from .pretrained import checkpoint_present, missing_checkpoint_message

            if not checkpoint_present(self.model_dir):
                raise FileNotFoundError(missing_checkpoint_message(self.model_dir).replace(
                    "--model_dir", "model_dir=").replace("--from_scratch", "from_scratch=True"))
        self.text_encoder_ = self._text_encoder(self.vocab_paths_)
        if not self.regression:
            self._set_classes(self._classes(X, _as_list(y, "y")))
        cap = EmbeddingLayout(len(self.text_encoder_.encoder), PAPER_SPECIALS, self.n_ctx)
        self.layout_ = cap
        train = self._encode(X, y)
        splits = {"train": train}
        if eval_set is not None:
            if len(eval_set) != 2:
                raise ValueError("eval_set must be (X_val, y_val)")
            splits["valid"] = self._encode(eval_set[0], eval_set[1], what="eval_set X")
        n_fit = max(int(s.lengths.max()) for s in splits.values())
        self.layout_ = cap.with_n_ctx(n_fit)
        splits = {k: _narrow(v, n_fit) for k, v in splits.items()}
        if len(train) < self.n_batch:
            raise ValueError(f"{len(train)} training examples make no batch of n_batch={self.n_batch}: lower n_batch")
        device = self._device()
        self.model_ = self._build_model()
        if not self.from_scratch:
            from .weights import load_openai_pretrained_model

            load_openai_pretrained_model(self.model_.transformer, n_ctx=n_fit, n_special=self.layout_.n_special,
                                         n_transfer=self.n_transfer, n_embd=self.n_embd, path=self.model_dir)
        self.model_.to(device)
        n_updates = (len(train) // self.n_batch) * self.n_iter
        opt = OpenAIAdam(self.model_.parameters(), lr=self.lr, schedule=self.lr_schedule, warmup=self.lr_warmup,
                         t_total=n_updates, b1=self.b1, b2=self.b2, e=self.e, l2=self.l2,
                         vector_l2=self.vector_l2, max_grad_norm=self.max_grad_norm)
        config = TrainConfig(n_iter=self.n_iter, n_batch=self.n_batch, n_batch_eval=self.n_batch_eval,
                             n_valid=self.n_valid, seed=self.seed, padding=self.padding, submit=False,
                             bf16=self._bf16(device), verbose=self.verbose)
        use_compile = self.compile if self.compile is not None else device.type == "cuda"  # as the CLI
        train_model = torch.compile(self.model_) if use_compile else self.model_
        with tempfile.TemporaryDirectory() as tmp:  # the Trainer's files (none with submit=False)
            trainer = Trainer(_FacadeTask(self, eval_set is not None), _Data(self.layout_, splits), self.model_,
                              opt, config, RunPaths("api", tmp, tmp, tmp), train_model=train_model)
            if eval_set is None:
                trainer.evaluate = lambda n_epochs: None  # nothing to score: no validation split
            self.history_ = trainer.fit()
        self.model_.eval()
        return self

    def _bf16(self, device) -> bool:
        return self.dtype == "bf16" or (self.dtype == "auto" and device.type == "cuda")

    # ---------------------------------------------------------------------------------- predict
    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit(X, y) or load(dir) first")

    @torch.no_grad()
    def decision_function(self, X) -> np.ndarray:
        """Task-head outputs: [N, n_classes] logits, [N, n_choices] scores, or [N] regression scores."""
        from tqdm import tqdm

        from .tasks.common import make_batch

        self._check_fitted()
        enc = self._encode(X)
        device = next(self.model_.parameters()).device
        nb = self.n_batch_eval or 2 * self.n_batch
        order = np.argsort(enc.lengths.max(1), kind="stable")  # similar lengths together: less padding
        self.model_.eval()
        out = []
        amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self._bf16(device))
        for b in tqdm(range(math.ceil(len(enc) / nb)), ncols=80, leave=False, desc="predict",
                      disable=not (self.verbose and sys.stderr.isatty())):
            x, _, _ = make_batch(enc, order[b * nb:(b + 1) * nb], self.layout_, device, "batch")
            with amp:
                out.append(self.model_.task_logits(x).float().cpu())
        logits = torch.cat(out).numpy()
        result = np.empty_like(logits)
        result[order] = logits
        return result

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        if self.regression:
            return scores.astype(np.float64)
        return np.asarray([self.classes_[i] for i in scores.argmax(-1)])

    def predict_proba(self, X) -> np.ndarray:
        if self.regression:
            raise AttributeError("a Regressor has no predict_proba: use predict")
        return torch.from_numpy(self.decision_function(X)).double().softmax(-1).numpy()

    def score(self, X, y) -> float:
        """Accuracy (classifiers) or R^2 (Regressor), as scikit-learn's estimators."""
        pred = self.predict(X)
        if self.regression:
            t = self._labels(y, len(pred)).astype(np.float64)
            return float(1 - ((t - pred) ** 2).sum() / ((t - t.mean()) ** 2).sum())
        self._labels(y, len(pred))  # unknown labels: a clear error
        return float(np.mean(pred == np.asarray(_as_list(y, "y"), dtype=object)))

    # ------------------------------------------------------------------------------- save / load
    def save(self, path) -> Path:
        """A folder with config.json and model.safetensors (plus nothing else: the vocabulary is
        referenced by path and SHA-256)."""
        from safetensors.torch import save

        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()
              if k != "lm_head.decoder.weight" and not k.endswith(".attn.b")}  # tied / constant
        meta = {"format": FORMAT, "estimator": type(self).__name__, "params": self.get_params(),
                "layout": self.layout_.to_dict(), "cfg": self._gpt_config().to_dict(),
                "classes": None if self.regression else [_jsonable(c) for c in self.classes_],
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
        from safetensors.torch import load_file

        from .weights import CheckpointError

        path = Path(path)
        cfg_file, weights = path / "config.json", path / "model.safetensors"
        for f in (cfg_file, weights):
            if not f.is_file():
                raise FileNotFoundError(f"{f}: not found (a folder written by {cls.__name__}.save)")
        try:
            meta = json.loads(cfg_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from None
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{cfg_file}: format {meta.get('format')!r}, expected {FORMAT!r}")
        est_cls = ESTIMATORS.get(meta["estimator"])
        if est_cls is None or (cls is not GPTEstimator and not issubclass(est_cls, cls)):
            raise CheckpointError(f"{cfg_file}: holds a {meta['estimator']}, not a {cls.__name__}")
        est = est_cls(**dict(meta["params"], **({"device": device} if device else {})))
        voc = meta["vocabulary"]
        paths = (voc["encoder_path"], voc["bpe_path"])
        for p, digest in zip(paths, voc["sha256"]):
            if not Path(p).is_file():
                raise FileNotFoundError(f"{p}: the vocabulary file this model was trained with is missing")
            if sha256_file(p) != digest:
                raise CheckpointError(f"{p}: the vocabulary file changed since the model was saved (SHA-256 differs)")
        est.vocab_paths_ = paths
        est.text_encoder_ = est._text_encoder(paths)
        est.layout_ = EmbeddingLayout.from_dict(meta["layout"])
        if not est.regression:
            est._set_classes(meta["classes"])
        est.pairs_ = meta.get("pairs")
        est.model_ = est._build_model()
        try:
            sd = load_file(str(weights))
        except Exception as e:
            raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None
        missing, unexpected = est.model_.load_state_dict(sd, strict=False)
        missing = [k for k in missing if k != "lm_head.decoder.weight" and not k.endswith(".attn.b")]
        if missing or unexpected:
            raise CheckpointError(f"{weights}: missing tensors {missing[:3]}, unexpected {unexpected[:3]}")
        est.model_.to(est._device()).eval()
        return est

    def export_hf(self, path) -> Path:
        """The transformer (and a multiple-choice head) as a Hugging Face openai-gpt folder."""
        from .weights import export_hf

        self._check_fitted()
        return export_hf(self.model_, path)


# ------------------------------------------------------------------------------------ estimators
class Classifier(GPTEstimator):
    """Text classification: `start text extract` -> linear head over the labels (SST-2, CoLA)."""
    family = "classification"

    def _fields(self, X, what="X"):
        return {"text": _texts(X, what)}

    def _head_type(self):
        return ("classification", len(self.classes_))


class Entailment(GPTEstimator):
    """Premise/hypothesis pairs: `start premise delim hypothesis extract` -> labels (SNLI, MNLI, RTE)."""
    family = "entailment"

    def _fields(self, X, what="X"):
        a, b = _pairs(X, what)
        return {"premise": a, "hypothesis": b}

    def _head_type(self):
        return ("classification", len(self.classes_))


class Similarity(GPTEstimator):
    """Unordered pairs: both orders through the model, states added -> labels (QQP, MRPC)."""
    family = "similarity"

    def _fields(self, X, what="X"):
        a, b = _pairs(X, what)
        return {"text_a": a, "text_b": b}

    def _head_type(self):
        return ("similarity", len(self.classes_))


class MultipleChoice(GPTEstimator):
    """(context, [answer, ...]) -> index of the right answer (Story Cloze, RACE); every example has
    the same number of answers."""
    family = "multiple_choice"

    def _fields(self, X, what="X"):
        rows = _as_list(X, what)
        ctx, choices = [], []
        for i, r in enumerate(rows):
            if not (isinstance(r, (tuple, list)) and len(r) == 2 and isinstance(r[1], (tuple, list))):
                raise ValueError(f"{what}[{i}]: expected (context, [answer, ...]), got {r!r}")
            ctx.append(r[0])
            choices.append(list(r[1]))
        _check_texts(ctx, f"{what} context")
        n = {len(c) for c in choices}
        if len(n) > 1:
            raise ValueError(f"{what}: every example needs the same number of answers, found {sorted(n)}")
        for i, c in enumerate(choices):
            _check_texts(c, f"{what}[{i}] answers")
        return {"context": ctx, "choices": choices}

    def _classes(self, X, y):
        n = len(self._fields(X)["choices"][0])
        for i, v in enumerate(y):
            if not (isinstance(v, (int, np.integer)) and 0 <= v < n):
                raise ValueError(f"y[{i}]: expected the index of the right answer (0..{n - 1}), got {v!r}")
        return list(range(n))

    def _head_type(self):
        return "multiple_choice"


class Regressor(GPTEstimator):
    """A score for a text (`start text extract` -> one output) or for an unordered pair of texts
    (both orders, as STS-B); squared-error loss."""
    family = "classification"
    regression = True

    def _fields(self, X, what="X"):
        rows = _as_list(X, what)
        pairs = bool(rows) and not isinstance(rows[0], str)
        if getattr(self, "pairs_", None) is None:
            self.pairs_ = pairs
        elif pairs != self.pairs_:
            raise ValueError(f"{what}: this Regressor was fitted on {'pairs of texts' if self.pairs_ else 'texts'}")
        if pairs:
            a, b = _pairs(X, what)
            return {"text_a": a, "text_b": b}
        return {"text": _texts(X, what)}

    def fit(self, X, y, eval_set=None):
        self.pairs_ = None
        return super().fit(X, y, eval_set)

    def _transform_family(self, fields):
        return "similarity" if "text_a" in fields else "classification"

    def _head_type(self):
        return "similarity" if self.pairs_ else ("classification", 1)


ESTIMATORS = {c.__name__: c for c in (Classifier, Entailment, Similarity, MultipleChoice, Regressor)}


# ------------------------------------------------------------------------------ task-layer glue
class _Data:
    def __init__(self, layout, splits):
        self.layout, self.splits = layout, splits


class _FacadeTask:
    """What the Trainer asks of a task: metrics, the validation split, predictions from logits."""

    def __init__(self, est: GPTEstimator, has_eval: bool):
        self.name = self.display = type(est).__name__
        self.regression = est.regression
        self.metrics = ("pearson",) if est.regression else ("accuracy",)
        self.eval_splits = ("valid",) if has_eval else ()
        self.test_splits = ()

    def predict(self, logits):
        return logits.astype(np.float64) if self.regression else logits.argmax(-1)


# ---------------------------------------------------------------------------------------- inputs
def _as_list(X, what) -> list:
    if X is None:
        raise ValueError(f"{what} is None")
    if hasattr(X, "to_numpy") and getattr(X, "ndim", 1) == 2:  # pandas DataFrame: rows as tuples
        return [tuple(r) for r in X.to_numpy().tolist()]
    if hasattr(X, "tolist"):  # pandas Series, NumPy array
        return X.tolist()
    if isinstance(X, (str, bytes)):
        raise TypeError(f"{what} must be a list of examples, got a single string")
    return list(X)


def _check_texts(texts, what):
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"{what}[{i}]: expected a string, got {type(t).__name__} {t!r}")
        if not t.strip():
            raise ValueError(f"{what}[{i}] is an empty string")


def _texts(X, what) -> list[str]:
    texts = _as_list(X, what)
    if not texts:
        raise ValueError(f"{what} is empty")
    _check_texts(texts, what)
    return texts


def _pairs(X, what) -> tuple[list[str], list[str]]:
    rows = _as_list(X, what)
    if not rows:
        raise ValueError(f"{what} is empty")
    for i, r in enumerate(rows):
        if not (isinstance(r, (tuple, list)) and len(r) == 2):
            raise ValueError(f"{what}[{i}]: expected a pair of texts (a, b), got {r!r}")
    a, b = [r[0] for r in rows], [r[1] for r in rows]
    _check_texts(a, f"{what} first texts")
    _check_texts(b, f"{what} second texts")
    return a, b


def _narrow(enc, width):
    from .tasks.common import Encoded

    return Encoded(enc.tokens[..., :width], enc.lengths, enc.labels, enc.ids)


def _sort_key(v):
    return (type(v).__name__, v)


def _jsonable(v):
    return v.item() if isinstance(v, np.generic) else v

