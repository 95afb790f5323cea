"""What each entry point hands on: the classify-token id reaching the task head, the optimizer's
t_total and schedule (the learning rate never negative, about 0 at the last update), every
optimisation option reaching the optimizer; and the estimators behaving as scikit-learn's."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("spacy")
pytest.importorskip("ftfy")
pytest.importorskip("sklearn")

from fixtures_tasks import story_cloze_with_vocab  # noqa: E402
from gpt1_fast import context, pretrain, train  # noqa: E402
from gpt1_fast.opt import OpenAIAdam, lr_at  # noqa: E402

TINY = ["--n_layer", "1", "--n_embd", "16", "--n_head", "2", "--device", "cpu", "--backend", "torch"]
OPTIM = {"lr": 3e-3, "b1": 0.8, "b2": 0.99, "e": 1e-6, "l2": 0.02, "max_grad_norm": 0.5}


@pytest.fixture(scope="module")
def roc(tmp_path_factory):
    d = tmp_path_factory.mktemp("wiring")
    story_cloze_with_vocab(d, n=56, n_test=8, seed=5, merges=100)
    return d


class Recorder:
    """Records every optimizer a RunContext makes, and the step size of each of its updates."""

    def __init__(self, monkeypatch):
        self.optimizers, self.lrs = [], []
        make, step = context.RunContext.optimizer, OpenAIAdam.step
        rec = self

        def optimizer(ctx, model, **kw):
            opt = make(ctx, model, **kw)
            rec.optimizers.append(opt)
            return opt

        def recorded_step(opt, closure=None):
            rec.lrs.append(lr_at(opt.param_groups[0], len(rec.lrs)))
            return step(opt, closure)

        monkeypatch.setattr(context.RunContext, "optimizer", optimizer)
        monkeypatch.setattr(OpenAIAdam, "step", recorded_step)


def finetune(roc, tmp_path, *extra):
    return train.main(["--data_dir", str(roc / "data"), "--from_scratch", "--encoder_path", str(roc / "enc.json"),
                       "--bpe_path", str(roc / "merges.bpe"), "--cache_dir", "none", "--n_valid", "8",
                       "--runs_dir", str(tmp_path), "--n_batch", "8", "--n_iter", "3", *TINY, *map(str, extra)])


def test_train_hands_the_optimizer_every_option_and_the_whole_run(roc, tmp_path, monkeypatch):
    rec = Recorder(monkeypatch)
    flags = [x for k, v in OPTIM.items() for x in (f"--{k}", v)]
    res = finetune(roc, tmp_path, *flags, "--vector_l2", "--lr_schedule", "warmup_cosine", "--lr_warmup", 0.1)
    (opt,) = rec.optimizers
    g = opt.param_groups[0]
    assert {k: g[k] for k in ("lr", "b1", "b2", "e", "l2")} == {k: OPTIM[k] for k in ("lr", "b1", "b2", "e", "l2")}
    assert opt.max_grad_norm == OPTIM["max_grad_norm"] and g["vector_l2"] is True
    assert (g["schedule"], g["warmup"]) == ("warmup_cosine", 0.1)
    # 48 training stories (56 minus 8 held out) / 8 = 6 updates an epoch, 3 epochs
    assert g["t_total"] == 6 * 3 == res["n_updates"] == len(rec.lrs)


def test_learning_rate_never_negative_and_about_zero_at_the_end(roc, tmp_path, monkeypatch):
    rec = Recorder(monkeypatch)
    finetune(roc, tmp_path)  # the release's warmup_linear
    assert min(rec.lrs) >= 0 and max(rec.lrs) > 0
    assert rec.lrs[-1] < max(rec.lrs) / len(rec.lrs) * 1.5  # the linear decay's last step: about 1/T of the peak


def test_train_hands_the_head_the_classify_token(roc, tmp_path, monkeypatch):
    seen = []
    build = train.build_model
    monkeypatch.setattr(train, "build_model", lambda args, task, layout, src: seen.append(
        (layout, build(args, task, layout, src))) or seen[-1][1])
    finetune(roc, tmp_path, "--n_iter", 1)
    (layout, model), = seen
    assert model.task_head.clf_token == layout.clf == layout.special("_classify_")


def test_pretrain_hands_the_optimizer_every_option_and_the_schedule(tmp_path, monkeypatch):
    import pretrain_helpers as h

    corpus = h.write_corpus(tmp_path / "corpus", n_docs=120)
    enc, bpe = h.learn_vocab(corpus, tmp_path / "vocab")
    rec = Recorder(monkeypatch)
    flags = [x for k, v in OPTIM.items() for x in (f"--{k}", v)]
    pretrain.main(["--data", str(corpus / "texts"), str(corpus / "more.jsonl"), "--out", str(tmp_path / "out"),
                   "--encoder_path", enc, "--bpe_path", bpe, "--val_fraction", "0.1", "--workers", "1", *h.TINY,
                   "--max_steps", "10", "--warmup_steps", "4", "--save_every", "0", "--vector_l2", *map(str, flags)])
    (opt,) = rec.optimizers
    g = opt.param_groups[0]
    assert {k: g[k] for k in ("lr", "b1", "b2", "e", "l2")} == {k: OPTIM[k] for k in ("lr", "b1", "b2", "e", "l2")}
    assert opt.max_grad_norm == OPTIM["max_grad_norm"] and g["vector_l2"] is True
    assert (g["schedule"], g["t_total"], g["warmup"]) == ("warmup_then_cosine", 10, 0.4)
    assert len(rec.lrs) == 10 and rec.lrs[0] == 0 and min(rec.lrs) >= 0
    assert rec.lrs[4] == pytest.approx(OPTIM["lr"] * (1 - 0.8 ** 5) ** -1 * (1 - 0.99 ** 5) ** 0.5)  # the peak


# ---------------------------------------------------------------------------------------- estimators
def tiny_classifier(roc, **kw):
    from gpt1_fast import Classifier

    return Classifier(**dict(dict(from_scratch=True, encoder_path=str(roc / "enc.json"),
                                  bpe_path=str(roc / "merges.bpe"), n_embd=16, n_head=2, n_layer=1, n_batch=8,
                                  n_iter=2, device="cpu", backend="torch", verbose=False, n_ctx=32), **kw))


def sentences(n=16):
    words = ["good", "bad"]
    return [f"the dog was {words[i % 2]} today" for i in range(n)], [words[i % 2] for i in range(n)]


def test_estimator_hands_the_optimizer_every_option_and_the_head_the_classify_token(roc, monkeypatch):
    rec = Recorder(monkeypatch)
    X, y = sentences()
    clf = tiny_classifier(roc, vector_l2=True, lr_schedule="warmup_constant", lr_warmup=0.25, **OPTIM).fit(X, y)
    (opt,) = rec.optimizers
    g = opt.param_groups[0]
    assert {k: g[k] for k in ("lr", "b1", "b2", "e", "l2")} == {k: OPTIM[k] for k in ("lr", "b1", "b2", "e", "l2")}
    assert opt.max_grad_norm == OPTIM["max_grad_norm"] and g["vector_l2"] is True
    assert (g["schedule"], g["warmup"], g["t_total"]) == ("warmup_constant", 0.25, (16 // 8) * 2)
    assert clf.model_.task_head.clf_token == clf.layout_.clf


def test_estimators_follow_scikit_learns_conventions(roc):
    from sklearn.base import clone, is_classifier, is_regressor
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from gpt1_fast import Regressor

    X, y = sentences()
    clf = tiny_classifier(roc, lr=1e-3)
    assert is_classifier(clf) and not is_regressor(clf) and is_regressor(Regressor())
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    twin = clone(clf)
    assert twin is not clf and twin.get_params() == clf.get_params()
    assert clf.set_params(n_iter=1, lr=2e-3) is clf and (clf.n_iter, clf.lr) == (1, 2e-3)
    with pytest.raises(ValueError, match="attn_pdrop: expected a number in \\[0, 1\\), got 1.5"):
        tiny_classifier(roc, attn_pdrop=1.5).fit(X, y)  # checked at fit, as scikit-learn does
    clf.fit(X, y)
    check_is_fitted(clf)
    assert list(clf.classes_) == ["bad", "good"] and clf.predict(X).shape == (16,)
    assert not hasattr(clone(clf), "model_")  # a clone is unfitted
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="one class"):
        tiny_classifier(roc).fit(X, ["good"] * 16)
