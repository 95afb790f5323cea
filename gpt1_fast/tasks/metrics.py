"""The metrics the paper reports (Tables 2-4), computed by scikit-learn and SciPy (imported lazily).

Every value is a percentage (the library's value x 100), as the paper prints them: accuracy 91.3,
F1 82.3, Matthews correlation 45.4, Pearson 82.0. Which metrics a dataset reports is
`DATASETS[name].metrics` (gpt1_fast.tasks.readers); the first is the one the paper's table shows and
the one to select the best parameters on. F1 is binary with class id 1 (MRPC "1" = paraphrase,
QQP "1" = duplicate) as the positive class, as GLUE scores it.
"""
from __future__ import annotations

import numpy as np

__all__ = ["compute", "METRICS"]


def _accuracy(y_true, y_pred):
    from sklearn.metrics import accuracy_score
    return accuracy_score(y_true, y_pred)


def _f1(y_true, y_pred):
    from sklearn.metrics import f1_score
    return f1_score(y_true, y_pred, pos_label=1, average="binary", zero_division=0.0)


def _mcc(y_true, y_pred):
    from sklearn.metrics import matthews_corrcoef
    return matthews_corrcoef(y_true, y_pred)


def _pearson(y_true, y_pred):
    from scipy.stats import pearsonr
    return pearsonr(y_true, y_pred)[0]


def _spearman(y_true, y_pred):
    from scipy.stats import spearmanr
    return spearmanr(y_true, y_pred)[0]


METRICS = {"accuracy": _accuracy, "f1": _f1, "mcc": _mcc, "pearson": _pearson, "spearman": _spearman}
_REGRESSION = {"pearson", "spearman"}


def compute(metric_names, y_true, y_pred) -> dict[str, float]:
    """{name: percentage} for each name; class ids for the classification metrics, scores for the
    correlations (STS-B). A constant prediction has no correlation: Pearson/Spearman are then nan."""
    if isinstance(metric_names, str):
        metric_names = (metric_names,)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"expected two 1-d arrays of one length, found shapes {y_true.shape} and {y_pred.shape}")
    if len(y_true) == 0:
        raise ValueError("expected at least one prediction, found none")
    out = {}
    for name in metric_names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(METRICS)}")
        if name in _REGRESSION:
            yt, yp = y_true.astype(np.float64), y_pred.astype(np.float64)
            if np.ptp(yt) == 0 or np.ptp(yp) == 0:
                out[name] = float("nan")  # undefined (SciPy would warn and return nan)
                continue
        else:
            yt, yp = y_true, y_pred
        out[name] = 100.0 * float(METRICS[name](yt, yp))
    return out
