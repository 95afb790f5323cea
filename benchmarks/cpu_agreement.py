"""Is bf16 inference exact enough? Predictions of the same models in fp32 and in bf16 (and compiled bf16),
on the CPU, through the one evaluation path (gpt1_fast.inference.task_logits):

  fixtures   a 2-layer model trained from scratch on each GLUE-format test fixture (tests/fixtures_tasks.py:
             the datasets' own file layouts, labels that follow from one word), scored on 600 dev rows
  real text  --data: Story Cloze 2018 CSVs (InputSentence1-4, RandomFifthSentenceQuiz1/2[, AnswerRightEnding]),
             the real GPT-1 vocabulary (../shared/openai-gpt): a small model fine-tuned from
             scratch on the first labelled stories for a few epochs (the MultipleChoice estimator), then
             the agreement on the held-out labelled stories (and their accuracy) and on every unlabelled one

Reported per set: examples, the share whose argmax (predicted class) is the same in bf16 as in fp32, each
metric in both and their difference (goal: >= 99.5 % agreement, metrics within 0.2 points), and the
largest logit difference.
"""
from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import row, write_results
from gpt1_fast import cpu
from gpt1_fast.context import InferenceSettings

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent
# the release's vocabulary: ../shared/openai-gpt beside the checkout (or two levels up, from a worktree)
VOCAB = next((p / "shared" / "openai-gpt" for p in (ROOT.parent, ROOT.parent.parent)
              if (p / "shared" / "openai-gpt" / "encoder_bpe_40000.json").is_file()), ROOT.parent / "shared" / "openai-gpt")
FIXTURES = ("sst-2", "cola", "mnli", "qnli", "rte", "mrpc", "qqp", "sts-b", "snli", "scitail")
MODES = {"bf16": InferenceSettings(CPU, True, False), "compiled bf16": InferenceSettings(CPU, True, True)}


def compare(task, enc, layout, model, labels=None, batch_size=32) -> list[dict]:
    """fp32 against each bf16 mode on the encoded examples: one dict per mode."""
    from gpt1_fast.inference import task_logits
    from gpt1_fast.tasks.common import compute_metrics

    ref = task_logits(model, enc, layout, batch_size=batch_size)
    p32 = task.predict(ref.numpy())
    out = []
    for mode, settings in MODES.items():
        lg = task_logits(model, enc, layout, batch_size=batch_size, settings=settings)
        p = task.predict(lg.numpy())
        r = {"mode": mode, "n": len(enc), "max_logit_diff": round((lg - ref).abs().max().item(), 5)}
        if task.label_names or task.family == "multiple_choice":
            r["agreement_pct"] = round(100 * float(np.mean(p == p32)), 3)
        else:
            r["max_score_diff"] = round(float(np.abs(p - p32).max()), 5)
        if labels is not None:
            m32, m16 = compute_metrics(task.metrics, labels, p32), compute_metrics(task.metrics, labels, p)
            r.update({f"{k}_fp32": round(v, 3) for k, v in m32.items()})
            r.update({f"{k}_diff": round(m16[k] - v, 3) for k, v in m32.items()})
        out.append(r)
    return out


def fixture_rows(quick: bool) -> list[dict]:
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures_tasks import WordEncoder, write_fixture

    from gpt1_fast.config import GPTConfig
    from gpt1_fast.context import RunContext
    from gpt1_fast.model import DoubleHeadModel
    from gpt1_fast.opt import OpenAIAdam
    from gpt1_fast.tasks import get_task
    from gpt1_fast.tasks.trainer import TrainConfig, Trainer

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in FIXTURES[:2] if quick else FIXTURES:
            task = get_task(name)
            data = task.load(write_fixture(name, Path(d) / name, n_rows=256, seed=0, n_eval=600), WordEncoder(), (),
                             n_ctx=32)
            torch.manual_seed(0)
            model = DoubleHeadModel(GPTConfig(n_embd=32, n_head=4, n_layer=2, backend="torch"), data.layout.clf,
                                    task.head_type, data.layout.size, data.layout.n_ctx, lm_coef=0)
            opt = OpenAIAdam(model.parameters(), lr=3e-3, t_total=4 * 16, warmup=0.1, max_grad_norm=1)
            trainer = Trainer(task, data, model, opt, TrainConfig(n_iter=4, n_batch=16, n_valid=16, verbose=False),
                              RunContext.local())
            trainer.evaluate = lambda n_epochs: None
            trainer.fit()
            dev = data.splits[task.eval_splits[0]]
            for r in compare(task, dev, data.layout, model, dev.labels):
                rows.append({"set": f"fixture {name} dev", **r})
    return rows


def read_cloze(path) -> tuple[list, np.ndarray | None]:
    """A Story Cloze 2018 CSV -> ([(context, [ending1, ending2])], labels 0/1 or None)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    X = [(" ".join(r[f"InputSentence{i}"] for i in range(1, 5)),
          [r["RandomFifthSentenceQuiz1"], r["RandomFifthSentenceQuiz2"]]) for r in rows]
    y = np.array([int(r["AnswerRightEnding"]) - 1 for r in rows]) if rows and "AnswerRightEnding" in rows[0] else None
    return X, y


def real_rows(files, quick: bool, n_train: int = 1071) -> list[dict]:
    from gpt1_fast import MultipleChoice

    labelled, unlabelled = [], []
    for f in files:
        X, y = read_cloze(f)
        (labelled if y is not None else unlabelled).append((Path(f).name, X, y))
    if not labelled:
        raise SystemExit("cpu_agreement --data: a Story Cloze CSV with AnswerRightEnding is needed to fine-tune")
    name, X, y = labelled[0]
    n_train = 64 if quick else n_train
    est = MultipleChoice(from_scratch=True, encoder_path=str(VOCAB / "encoder_bpe_40000.json"),
                         bpe_path=str(VOCAB / "vocab_40000.bpe"), n_layer=2 if quick else 4, n_embd=256, n_head=8,
                         n_batch=16, n_iter=1 if quick else 6, lr=1e-4 if quick else 2.5e-4, lm_coef=0.5,
                         device="cpu", backend="torch", dtype="fp32", compile=False, verbose=False)
    t0 = time.perf_counter()
    est.fit(X[:n_train], y[:n_train].tolist())
    print(f"fine-tuned on {n_train} stories of {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    sets = [(f"{name} held out ({len(X) - n_train} stories)", X[n_train:], y[n_train:])]
    sets += [(f"{n} ({len(Xu)} stories, unlabelled)", Xu, None) for n, Xu, _ in unlabelled]
    rows = []
    for label, Xs, ys in sets:
        if quick:
            Xs, ys = Xs[:32], None if ys is None else ys[:32]
        enc, _ = est._task().encode(est._fields(Xs), None, est.text_encoder_, est.layout_, est.n_ctx_cap_)
        for r in compare(est._task(), enc, est.layout_, est.model_, ys):
            rows.append({"set": f"Story Cloze 2018 {label}", **r})
    return rows


def main(quick: bool = False, data=None):
    facts = cpu.describe()
    rows = fixture_rows(quick) + (real_rows(data, quick) if data else [])
    out = [row("bf16 vs fp32 predictions", [r.pop("n")], "bfloat16", r.pop("mode"), 0.0, set=r.pop("set"), **r)
           for r in rows]
    notes = (f"{facts['processor']}, {facts['threads']} threads, native bf16 {facts['native_bf16']}. 'ms' unused; "
             "agreement_pct: examples whose predicted class is the same in bf16 as in fp32; <metric>_diff: bf16's "
             "score minus fp32's, in points. Fixtures: 2 x 32 model, 4 epochs from scratch; real text: 4 x 256 "
             "model from scratch on the first 1071 labelled stories, the real GPT-1 vocabulary.")
    write_results("cpu_agreement" + ("-quick" if quick else ""), out, facts, CPU, notes=notes)
    return out


if __name__ == "__main__":
    main(quick="--quick" in sys.argv, data=[a for a in sys.argv[1:] if not a.startswith("--")] or None)
