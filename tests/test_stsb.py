"""STS-B as the TF release trains it: scores as soft labels over 6 classes, the expected class as the
prediction, clipped to 0-5; the squared-error regression behind objective="regression"."""
import math

import numpy as np
import pytest
import torch

from gpt1_fast.reference import soft_labels
from gpt1_fast.tasks import get_task


def release_stsb_label_encoding(labels, nclass=6):
    """The TF release's utils.stsb_label_encoding, written out in float64."""
    Y = np.zeros((len(labels), nclass), dtype=np.float64)
    for j, y in enumerate(labels):
        for i in range(nclass):
            if i == math.floor(y) + 1:
                Y[j, i] = y - math.floor(y)
            if i == math.floor(y):
                Y[j, i] = math.floor(y) - y + 1
    return Y


def test_encoding_equals_the_release_function():
    rng = np.random.default_rng(0)
    y = np.concatenate([[0.0, 5.0, 1.0, 2.0, 3.0, 4.0, 2.5, 0.2, 4.999, 4.75], rng.uniform(0, 5, 200)])
    got = soft_labels(torch.from_numpy(y), 6).numpy()
    want = release_stsb_label_encoding(y)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-15)
    np.testing.assert_allclose(got @ np.arange(6), y, atol=1e-12)  # its expectation is the score
    assert got[1].tolist() == [0, 0, 0, 0, 0, 1] and got[6].tolist() == [0, 0, 0.5, 0.5, 0, 0]


def test_objective_picks_the_head_and_the_default_is_the_release():
    t = get_task("sts-b")
    assert t.objective == "soft_labels" and t.head_type == ("similarity_soft_labels", 6) and t.regression
    r = get_task("sts-b", objective="regression")
    assert r.objective == "regression" and r.head_type == "similarity" and r.regression
    with pytest.raises(ValueError, match="objective must be one of soft_labels, regression"):
        get_task("sts-b", objective="mse")
    with pytest.raises(ValueError, match="not to sst-2"):
        get_task("sst-2", objective="regression")
    assert get_task("mrpc").head_type == ("similarity", 2) and get_task("mrpc").objective is None


def test_prediction_is_the_expected_class_clipped_to_the_score_range():
    t = get_task("sts-b")
    logits = np.array([[0.0, 1.0, 2.0, -1.0, 0.5, 3.0], [9.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 40.0]], dtype=np.float32)
    p = np.exp(logits.astype(np.float64))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(t.predict(logits), p @ np.arange(6), rtol=1e-12)
    assert t.predict(logits)[2] == pytest.approx(5.0)
    r = get_task("sts-b", objective="regression")
    assert r.predict(np.array([-0.22, 2.5, 5.3], dtype=np.float32)).tolist() == [0.0, 2.5, 5.0]  # clipped
    assert get_task("sts-b").format_prediction(2.25) == "2.25"
