"""The inference path (gpt1_fast.inference, the rule in gpt1_fast.context.inference_settings): bf16 only
where the CPU has it natively, predictions independent of the batching order, the compiled forward
equal to the eager one, bf16 predictions agreeing with fp32 on small models trained on the GLUE-format
fixtures, and the options reaching it from every entry point."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from fixtures_tasks import WordEncoder, write_fixture
from gpt1_fast import context, cpu, inference
from gpt1_fast.config import GPTConfig
from gpt1_fast.context import InferenceSettings, RunContext, inference_settings
from gpt1_fast.layout import EmbeddingLayout
from gpt1_fast.model import DoubleHeadModel
from gpt1_fast.opt import OpenAIAdam
from gpt1_fast.tasks import get_task
from gpt1_fast.tasks.common import Encoded, compute_metrics, make_batch
from gpt1_fast.tasks.trainer import TrainConfig, Trainer

CPU = torch.device("cpu")
AVX512_NO_BF16 = frozenset({"sse4_2", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"})


# ------------------------------------------------------------------------------------ the rule
def test_cpuinfo_flags_are_read_from_the_first_processor(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
                   "processor\t: 1\nflags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert cpu.cpu_flags(str(x86)) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert cpu.native_bf16(cpu.cpu_flags(str(x86))) and cpu.native_bf16(cpu.cpu_flags(str(arm)))
    assert cpu.cpu_flags(str(tmp_path / "missing")) == frozenset()  # macOS, Windows: no bf16 assumed


@pytest.mark.parametrize("flags,native", [(AVX512_NO_BF16, False), (frozenset({"avx2", "fma"}), False),
                                          (AVX512_NO_BF16 | {"avx512_bf16"}, True),
                                          (AVX512_NO_BF16 | {"amx_tile", "amx_bf16"}, True), (frozenset(), False)])
def test_auto_is_bf16_only_where_the_cpu_has_it_natively(monkeypatch, flags, native):
    """AVX-512 without BF16 emulates bf16 GEMMs (slower than fp32) and AVX2 runs scalar loops: fp32 there."""
    monkeypatch.setattr(cpu, "cpu_flags", lambda path=cpu.CPUINFO: flags)
    assert inference_settings(CPU, "auto").bf16 is native
    assert inference_settings(CPU, "bf16").bf16 and not inference_settings(CPU, "fp32").bf16  # as asked
    assert inference_settings(torch.device("cuda"), "auto").bf16 and not inference_settings("cuda", "fp32").bf16
    assert inference_settings(CPU, "auto").dtype == (torch.bfloat16 if native else torch.float32)
    # training keeps its own rule: exact fp32 on any CPU unless asked
    ctx = RunContext.local("cpu", dtype="auto")
    assert not ctx.bf16 and ctx.inference.bf16 is native


def test_a_cpu_evaluation_compiles_by_default_only_when_it_repays_the_compilation(monkeypatch):
    monkeypatch.setattr(cpu, "cpp_compiler", lambda: "/usr/bin/c++")
    auto = inference_settings(CPU, "auto")
    assert not auto.compiles(context.COMPILE_MIN_WORK / 2) and auto.compiles(context.COMPILE_MIN_WORK)
    assert inference_settings(CPU, "auto", True).compiles(1.0)  # --compile
    assert not inference_settings(CPU, "auto", False).compiles(1e20)  # --no-compile
    assert not inference_settings(torch.device("cuda"), "auto").compiles(1e20)  # CUDA: fused kernels, eager
    monkeypatch.setattr(cpu, "cpp_compiler", lambda: None)  # no C++ compiler: inductor cannot build its kernels
    assert not inference_settings(CPU, "auto").compiles(1e20)


# ------------------------------------------------------------------------- batching, compiled path
LAYOUT = EmbeddingLayout(20, n_ctx=16)


def tiny(head=("classification", 3), seed=0, n_embd=16):
    torch.manual_seed(seed)
    cfg = GPTConfig(n_embd=n_embd, n_head=2, n_layer=1, backend="torch")
    m = DoubleHeadModel(cfg, LAYOUT.clf, head, LAYOUT.size, LAYOUT.n_ctx)
    with torch.no_grad():  # livelier than the N(0, 0.02) init: logits that differ from example to example
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m


def examples(n, n_seq=1, max_len=13, seed=0):
    rng = np.random.RandomState(seed)
    seqs = [[[LAYOUT.start] + rng.randint(0, 20, rng.randint(1, max_len)).tolist() + [LAYOUT.clf]
             for _ in range(n_seq)] for _ in range(n)]
    return Encoded.from_sequences(seqs, rng.randint(0, 2, n), [str(i) for i in range(n)], LAYOUT.n_ctx)


def one_by_one(model, enc):
    """Each example alone in its own batch at its own width: no padding, no order."""
    return torch.cat([inference.task_logits(model, subset(enc, [i]), LAYOUT, batch_size=1) for i in range(len(enc))])


def subset(enc, idx):
    return Encoded(enc.tokens[idx], enc.lengths[idx], enc.labels[idx], [enc.ids[i] for i in idx])


@pytest.mark.parametrize("head,n_seq", [(("classification", 3), 1), ("multiple_choice", 3)])
def test_predictions_are_the_same_whatever_the_order_of_the_examples(head, n_seq):
    model, enc = tiny(head), examples(23, n_seq)
    want = one_by_one(model, enc)
    got = inference.task_logits(model, enc, LAYOUT, batch_size=4)  # sorted by length into 6 batches, then unsorted
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    perm = np.random.RandomState(1).permutation(len(enc))
    shuffled = inference.task_logits(model, subset(enc, perm), LAYOUT, batch_size=4)
    torch.testing.assert_close(shuffled, want[perm], rtol=0, atol=1e-5)
    assert len(set(got.argmax(-1).tolist())) > 1  # the examples do differ


def test_the_compiled_forward_gives_the_eager_predictions_for_every_model():
    """Two models of the same shapes through one compiled graph (the weights are its inputs, not
    constants), 11 examples in batches of 4 (the last padded to 4 and cut back), one width (8)."""
    enc = examples(11, max_len=6, seed=3)
    for seed in (0, 1):
        model = tiny(seed=seed)
        for bf16 in (False, True):
            eager = inference.task_logits(model, enc, LAYOUT, batch_size=4,
                                          settings=InferenceSettings(CPU, bf16, False))
            compiled = inference.task_logits(model, enc, LAYOUT, batch_size=4,
                                             settings=InferenceSettings(CPU, bf16, True))
            assert compiled.shape == eager.shape == (11, 3)
            torch.testing.assert_close(compiled, eager, rtol=0, atol=2e-2 if bf16 else 1e-5)
            assert torch.equal(compiled.argmax(-1), eager.argmax(-1))
    assert model.training  # put back as it was


def test_bf16_evaluation_runs_on_bf16_weights_made_afresh_for_each_evaluation():
    """The blocks' matrices cast once per evaluation give autocast's own products (the same bits), and a
    model updated in place between two evaluations is evaluated as it is now, eager and compiled."""
    enc = examples(9, max_len=6, seed=4)
    model = tiny(seed=2)
    X, _, _ = make_batch(enc, np.arange(3), LAYOUT, CPU, "batch")
    weights = inference.block_weights(model, torch.bfloat16)
    assert weights and all(w.dtype == torch.bfloat16 and w.dim() == 2 for w in weights.values())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(inference.head_outputs(model.eval(), X, weights), inference.head_outputs(model, X))
    for compile_ in (False, True):
        settings = InferenceSettings(CPU, True, compile_)
        before = inference.task_logits(model, enc, LAYOUT, batch_size=4, settings=settings)
        with torch.no_grad():
            for p in model.transformer.h.parameters():
                p.mul_(1.5)  # as an optimizer step would: in place
        after = inference.task_logits(model, enc, LAYOUT, batch_size=4, settings=settings)
        fresh = inference.task_logits(model, enc, LAYOUT, batch_size=4, settings=InferenceSettings(CPU, False, False))
        stale, err = (before - fresh).abs().max(), (after - fresh).abs().max()  # fresh: fp32, no bf16 copies
        assert err < 0.05 * fresh.abs().max() and err < stale / 5, (compile_, err, stale)


# --------------------------------------------------------------------- bf16 against fp32, trained
def trained(name, tmp_path, n_iter, n_eval=600):
    """A 2-layer model trained from scratch for n_iter epochs on the dataset's GLUE-format fixture."""
    task = get_task(name)
    data = task.load(write_fixture(name, tmp_path / name, n_rows=256, seed=0, n_eval=n_eval), WordEncoder(), (),
                     n_ctx=24)
    torch.manual_seed(0)
    cfg = GPTConfig(n_embd=32, n_head=4, n_layer=2, backend="torch")
    model = DoubleHeadModel(cfg, data.layout.clf, task.head_type, data.layout.size, data.layout.n_ctx, lm_coef=0)
    opt = OpenAIAdam(model.parameters(), lr=3e-3, t_total=n_iter * 16, warmup=0.1, max_grad_norm=1)
    trainer = Trainer(task, data, model, opt, TrainConfig(n_iter=n_iter, n_batch=16, n_valid=16, verbose=False),
                      RunContext.local())
    trainer.evaluate = lambda n_epochs: None
    trainer.fit()
    return task, data.splits[task.eval_splits[0]], data.layout, model


@pytest.mark.parametrize("name,n_iter", [("sst-2", 4), ("mnli", 3), ("sts-b", 3)])
def test_bf16_predictions_agree_with_fp32_on_a_trained_model(tmp_path, name, n_iter):
    task, dev, layout, model = trained(name, tmp_path, n_iter)
    preds, scores = {}, {}
    for bf16 in (False, True):
        logits = inference.task_logits(model, dev, layout, batch_size=32, settings=InferenceSettings(CPU, bf16, False))
        assert (logits != logits.bfloat16().float()).float().mean() > 0.9  # the head's outputs are not rounded to bf16
        preds[bf16] = task.predict(logits.numpy())
        scores[bf16] = compute_metrics(task.metrics, dev.labels, preds[bf16])
    assert max(scores[False].values()) > 40  # a model that learned something (STS-B: Pearson ~48)
    for m in scores[False]:
        assert abs(scores[False][m] - scores[True][m]) <= 0.2, (m, scores)
    if task.label_names:  # classes: the same argmax on >= 99.5 % of the examples
        assert np.mean(preds[False] == preds[True]) >= 0.995
    else:  # scores: within 0.5 % of their range (measured: 0.2 %)
        assert np.abs(preds[False] - preds[True]).max() <= 0.005 * np.ptp(preds[False])


# ----------------------------------------------------------------------------------- the wiring
class Spy:
    """Stands in for task_logits / generate and records the settings each entry point hands it."""

    def __init__(self, monkeypatch):
        from gpt1_fast import api, sampling
        from gpt1_fast.tasks import trainer as trainer_mod

        self.settings, self.dtypes, self.real = [], [], inference.task_logits
        for mod in (trainer_mod, api, inference):  # predict imports it from inference when it runs
            monkeypatch.setattr(mod, "task_logits", self.task_logits)
        real = sampling.generate
        monkeypatch.setattr(sampling, "generate", lambda *a, dtype=None, **kw: (self.dtypes.append(dtype),
                                                                                real(*a, dtype=dtype, **kw))[1])

    def task_logits(self, model, enc, layout, *, settings=None, **kw):
        self.settings.append(settings)
        return self.real(model, enc, layout, settings=InferenceSettings(CPU, False, False), **kw)


def test_trainer_evaluates_by_the_inference_rule_not_the_training_one(monkeypatch):
    spy = Spy(monkeypatch)
    monkeypatch.setattr(cpu, "cpu_flags", lambda path=cpu.CPUINFO: AVX512_NO_BF16 | {"avx512_bf16"})
    from gpt1_fast.tasks.task import TaskData

    for dtype, compile_opt, want in [("auto", None, InferenceSettings(CPU, True, None)),
                                     ("fp32", False, InferenceSettings(CPU, False, False)),
                                     ("bf16", True, InferenceSettings(CPU, True, True))]:
        ctx = RunContext(argparse.Namespace(device="cpu", dtype=dtype, compile=compile_opt, seed=0), distributed=False)
        trainer = Trainer(get_task("mnli"), TaskData(LAYOUT, {"train": examples(3)}), tiny(), None,
                          TrainConfig(n_batch=1), ctx)
        trainer.logits("train")
        assert spy.settings[-1] == want
        assert ctx.bf16 == (dtype == "bf16")  # training: exact fp32 on a CPU unless asked


def test_estimators_predict_and_generate_hand_on_their_dtype_and_compile(monkeypatch, tmp_path):
    pytest.importorskip("spacy")
    pytest.importorskip("ftfy")
    from gpt1_fast import Classifier, generate, predict
    from gpt1_fast.text import learn_bpe

    spy = Spy(monkeypatch)
    words = ["good", "bad"]
    X, y = [f"the dog was {words[i % 2]} today" for i in range(16)], [words[i % 2] for i in range(16)]
    learn_bpe(X, 30, tmp_path / "enc.json", tmp_path / "merges.bpe")
    clf = Classifier(from_scratch=True, encoder_path=str(tmp_path / "enc.json"), bpe_path=str(tmp_path / "merges.bpe"),
                     n_embd=16, n_head=2, n_layer=1, n_batch=8, n_iter=1, device="cpu", backend="torch",
                     verbose=False, n_ctx=16, dtype="bf16", compile=False).fit(X, y)
    clf.predict(X[:3])
    assert spy.settings[-1] == InferenceSettings(CPU, True, False)
    clf.set_params(dtype="fp32", compile=True).decision_function(X[:3])
    assert spy.settings[-1] == InferenceSettings(CPU, False, True)
    folder = clf.save(tmp_path / "model")
    (tmp_path / "new.txt").write_text("the cat was good\n")
    for flags, want in [(["--dtype", "bf16", "--no-compile"], InferenceSettings(CPU, True, False)),
                        (["--dtype", "fp32", "--compile"], InferenceSettings(CPU, False, True))]:
        predict.main(["--model_dir", str(folder), "--data", str(tmp_path / "new.txt"), "--device", "cpu",
                      "--predictions", str(tmp_path / "p.tsv"), *flags])
        assert spy.settings[-1] == want
    for flag, want in [("bf16", torch.bfloat16), ("fp32", torch.float32)]:
        generate.main(["--model_dir", str(folder), "--prompt", "the dog", "--max_new_tokens", "2", "--device", "cpu",
                       "--dtype", flag])
        assert spy.dtypes[-1] == want
