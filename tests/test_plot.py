"""python -m gpt1_fast.plot: a run's log drawn as a person reads it: the figure titled with the run's
name, each panel one quantity with its axes in words and units over updates, the training and
validation curves of a quantity on one panel, the model kept starred; fine-tuning logs of every
kind (one validation split, several, RACE's levels) and pretraining logs."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from gpt1_fast import plot  # noqa: E402

HEADER = {"desc": "sst-2", "dataset": "sst-2", "n_layer": 2, "n_embd": 64, "n_head": 4, "n_batch": 8, "n_valid": 16,
          "lm_coef": 0.5}


def write(path, records, tail=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n" + tail)
    return path


def finetune_log(path, evals, header=HEADER):
    """A fine-tuning log: the header, the training loss every 2 updates, the evaluations `evals`."""
    recs = [header] + [{"n_updates": u, "loss": 3.0 - u / 10, "lr": 1e-4 * (1 - u / 12)} for u in range(2, 13, 2)]
    return write(path, recs + [dict(n_epochs=i + 1, **e) for i, e in enumerate(evals)])


def curves(panel):
    return {label: xy for label, xy in panel.curves.items()}


def test_finetuning_panels_put_train_and_validation_of_a_quantity_together(tmp_path):
    log = finetune_log(tmp_path / "runs" / "sst-2" / "log.jsonl", [
        dict(n_updates=6, tr_cost=0.7, va_cost=0.69, tr_acc=50.0, va_acc=55.0),
        dict(n_updates=12, tr_cost=0.5, va_cost=0.6, tr_acc=70.0, va_acc=55.0)],
        header=dict(HEADER, n_valid=16))
    panels = plot.finetune_panels(plot.read_log(log))
    assert [p.title for p in panels] == ["training objective", "task loss", "accuracy", "learning rate"]
    objective, task, acc, lr = panels
    assert curves(objective) == {"training batches (task + 0.5 × LM loss)": ([2, 4, 6, 8, 10, 12],
                                                                              [2.8, 2.6, 2.4, 2.2, 2.0, 1.8])}
    assert curves(task) == {"training examples (first 16)": ([6, 12], [0.7, 0.5]), "validation": ([6, 12], [0.69, 0.6])}
    assert curves(acc) == {"training examples (first 16)": ([6, 12], [50.0, 70.0]), "validation": ([6, 12], [55.0, 55.0])}
    assert acc.best == "validation" and acc.ylabel == "accuracy (%)" and task.ylabel == "loss (nats per example)"
    assert curves(lr)[""][0] == [2, 4, 6, 8, 10, 12]


def test_several_validation_splits_and_race_levels(tmp_path):
    mnli = finetune_log(tmp_path / "mnli.jsonl", [dict(n_updates=6, tr_cost=1.1, dev_matched_cost=1.0,
                                                       dev_mismatched_cost=1.2, tr_acc=30.0, dev_matched_acc=40.0,
                                                       dev_mismatched_acc=38.0)])
    _, task, acc, _ = plot.finetune_panels(plot.read_log(mnli))
    assert list(curves(task)) == list(curves(acc)) == ["training examples (first 16)", "dev_matched", "dev_mismatched"]
    assert acc.best == "dev_matched"  # the first validation split selects the model
    race = finetune_log(tmp_path / "race.jsonl", [dict(n_updates=6, tr_cost=1.3, va_cost=1.35, tr_acc=30.0, va_acc=28.0,
                                                       **{"va_acc_RACE-m": 31.0, "va_acc_RACE-h": 26.0})])
    _, _, acc, _ = plot.finetune_panels(plot.read_log(race))
    assert list(curves(acc)) == ["training examples (first 16)", "validation", "validation, RACE-m", "validation, RACE-h"]
    assert acc.best == "validation"
    mrpc = finetune_log(tmp_path / "mrpc.jsonl", [dict(n_updates=6, tr_cost=0.7, va_cost=0.7, tr_f1=50.0, tr_acc=60.0,
                                                       va_f1=55.0, va_acc=62.0)])
    panels = plot.finetune_panels(plot.read_log(mrpc))
    assert [p.title for p in panels] == ["training objective", "task loss", "F1", "accuracy", "learning rate"]
    assert panels[2].best == "validation" and panels[3].best is None  # F1 selects MRPC's model


def test_pretraining_panels(tmp_path):
    log = write(tmp_path / "books" / "log.jsonl", [
        {"kind": "pretrain", "step": 0, "args": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_batch": 4, "n_ctx": 16}},
        {"step": 1, "loss": 5.0, "lr": 1e-4, "tokens_per_s": 100.0}, {"step": 2, "loss": 4.0, "lr": 2e-4},
        {"step": 2, "val_loss": 4.2, "val_ppl": 66.7}], tail='{"step": 3, "lo')  # a killed writer's half line
    records = plot.read_log(log)
    assert plot.log_kind(records) == "pretrain" and plot.run_name(log, records) == "books"
    loss, lr, speed = plot.pretrain_panels(records)
    assert curves(loss) == {"training batches": ([1, 2], [5.0, 4.0]), "validation windows": ([2], [4.2])}
    assert loss.ylabel == "loss (nats per token)" and curves(lr)[""] == ([1, 2], [1e-4, 2e-4])
    assert speed.ylabel == "tokens per second"
    assert plot.subtitle("pretrain", records) == "pretraining, 1 layer, width 32, 2 heads, 4 × 16 tokens per update"


def test_the_figure_a_person_sees(tmp_path):
    log = finetune_log(tmp_path / "runs" / "my-run" / "log.jsonl", [
        dict(n_updates=6, tr_cost=0.7, va_cost=0.69, tr_acc=50.0, va_acc=60.0),
        dict(n_updates=12, tr_cost=0.5, va_cost=0.6, tr_acc=70.0, va_acc=60.0)], header=dict(HEADER, desc=None))
    fig = plot.figure(log)
    assert fig._suptitle.get_text() == "my-run\nfine-tuning on sst-2, 2 layers, width 64, 4 heads, batch 8"
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["training objective", "task loss", "accuracy", "learning rate"]
    assert all(a.get_xlabel() == "updates" for a in axes)
    assert [a.get_ylabel() for a in axes] == ["loss (nats)", "loss (nats per example)", "accuracy (%)", "learning rate"]
    legend = [t.get_text() for t in axes[2].get_legend().get_texts()]
    assert legend == ["training examples (first 16)", "validation", "best, kept in model/ (update 6)"]  # first best
    out = plot.plot_log(log)
    assert out == log.with_suffix(".png") and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_names(tmp_path):
    seed_layout = finetune_log(tmp_path / "log" / "rocstories.jsonl", [], header=dict(HEADER, desc="rocstories"))
    assert plot.run_name(seed_layout, plot.read_log(seed_layout)) == "rocstories"
    unnamed = write(tmp_path / "log" / "other.jsonl", [{"n_updates": 1, "loss": 2.0}])
    assert plot.run_name(unnamed, plot.read_log(unnamed)) == "other"


def test_command_line(tmp_path, capsys):
    log = finetune_log(tmp_path / "runs" / "x" / "log.jsonl", [dict(n_updates=6, tr_cost=0.7, va_cost=0.69,
                                                                    tr_acc=50.0, va_acc=55.0)])
    plot.cli([str(log), "--out", str(tmp_path / "x.png")])
    assert capsys.readouterr().out == f"{tmp_path / 'x.png'}\n" and (tmp_path / "x.png").is_file()
    bad = write(tmp_path / "bad.jsonl", [{"a": 1}])
    with pytest.raises(SystemExit) as e:
        plot.cli([str(bad)])
    assert e.value.code == 1 and "bad.jsonl: no loss records" in capsys.readouterr().err
