"""gpt1_fast.tasks.metrics: each metric is scikit-learn's / SciPy's value as a percentage, and each
dataset reports the metrics of the paper's tables."""
import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from gpt1_fast.tasks.metrics import METRICS, compute
from gpt1_fast.tasks.readers import DATASETS


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    p[:120] = y[:120]  # better than chance, so every value is away from 0 and 50
    got = compute(("accuracy", "f1", "mcc"), y, p)
    assert got["accuracy"] == pytest.approx(100 * skm.accuracy_score(y, p), abs=1e-12)
    assert got["f1"] == pytest.approx(100 * skm.f1_score(y, p), abs=1e-12)
    assert got["mcc"] == pytest.approx(100 * skm.matthews_corrcoef(y, p), abs=1e-12)
    assert list(got) == ["accuracy", "f1", "mcc"]


def test_f1_counts_class_one_as_positive():
    y, p = np.array([1, 1, 1, 0, 0, 0, 0, 0]), np.array([1, 0, 0, 0, 0, 0, 0, 1])
    # class 1: tp 1, fp 1, fn 2 -> F1 = 2 / (2 + 1 + 2) = 0.4; with class 0 positive it would be 0.8
    assert compute("f1", y, p)["f1"] == pytest.approx(40.0)


def test_multiclass_accuracy():
    rng = np.random.default_rng(7)
    y, p = rng.integers(0, 3, 100), rng.integers(0, 3, 100)
    assert compute(["accuracy"], y, p)["accuracy"] == pytest.approx(100 * np.mean(y == p))


@pytest.mark.parametrize("seed", range(5))
def test_correlations_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 5, 150).astype(np.float32)
    p = (y + rng.normal(0, 1.5, 150)).astype(np.float32)
    got = compute(("pearson", "spearman"), y, p)
    assert got["pearson"] == pytest.approx(100 * stats.pearsonr(y.astype(np.float64), p.astype(np.float64))[0], abs=1e-9)
    assert got["spearman"] == pytest.approx(100 * stats.spearmanr(y, p)[0], abs=1e-9)
    assert got["pearson"] != pytest.approx(got["spearman"], abs=1e-3)  # the two are not swapped


def test_constant_prediction_has_no_correlation():
    got = compute(("pearson", "spearman"), [0.0, 1.0, 2.0], [3.0, 3.0, 3.0])
    assert math.isnan(got["pearson"]) and math.isnan(got["spearman"])


def test_bad_input():
    with pytest.raises(ValueError, match="unknown metric 'auc'; expected one of accuracy, f1, mcc"):
        compute("auc", [0, 1], [0, 1])
    with pytest.raises(ValueError, match=r"expected two 1-d arrays of one length, found shapes \(2,\) and \(3,\)"):
        compute("accuracy", [0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="expected at least one prediction"):
        compute("accuracy", [], [])


def test_each_dataset_reports_the_papers_metrics():
    """Tables 2-4: accuracy everywhere except F1 (MRPC, QQP; with accuracy), Pearson (STS-B; with
    Spearman) and Matthews correlation (CoLA); MNLI on both dev sets."""
    assert {n: s.metrics for n, s in DATASETS.items()} == {
        "rocstories": ("accuracy",), "snli": ("accuracy",), "mnli": ("accuracy",), "qnli": ("accuracy",), "rte": ("accuracy",),
        "scitail": ("accuracy",), "qqp": ("f1", "accuracy"), "mrpc": ("f1", "accuracy"),
        "sts-b": ("pearson", "spearman"), "sst-2": ("accuracy",), "cola": ("mcc",),
        "race": ("accuracy",), "race-m": ("accuracy",), "race-h": ("accuracy",), "wnli": ("accuracy",)}
    assert DATASETS["mnli"].eval_splits == ("dev_matched", "dev_mismatched")
    assert all(set(s.metrics) <= set(METRICS) for s in DATASETS.values())
