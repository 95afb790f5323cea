"""`gpt1_fast.train` end to end on CPU, tiny model from scratch, one dataset of each family in its
public file layout (tests/fixtures_tasks.py): log, best parameters and submission files are written,
and the printed scores agree with the prediction files."""
import json
import re

import numpy as np
import pytest

pytest.importorskip("spacy")
pytest.importorskip("ftfy")

from fixtures_tasks import write_fixture  # noqa: E402
from gpt1_fast import train  # noqa: E402
from gpt1_fast.tasks import get_task  # noqa: E402
from gpt1_fast.tasks.metrics import compute  # noqa: E402
from gpt1_fast.tasks.readers import read_split  # noqa: E402
from gpt1_fast.tasks.submission import read_predictions  # noqa: E402
from gpt1_fast.text import learn_bpe  # noqa: E402

TINY = ["--n_layer", "1", "--n_embd", "16", "--n_head", "2", "--device", "cpu", "--backend", "torch",
        "--n_batch", "8", "--n_iter", "2", "--n_valid", "16", "--lr", "1e-3", "--n_ctx", "64"]


def run(tmp_path, name, capsys):
    data = write_fixture(name, tmp_path / "data", n_rows=32, seed=0, n_eval=12)
    task = get_task(name)
    texts = [t for s in ("train", *task.eval_splits) for f in read_split(name, data, s).fields.values()
             for t in f if isinstance(t, str)]
    enc, bpe = tmp_path / "vocab" / "enc.json", tmp_path / "vocab" / "merges.bpe"
    learn_bpe(texts, 100, enc, bpe)
    out = tmp_path / "out"
    res = train.main(["--dataset", name, "--data_dir", str(data), "--from_scratch", "--encoder_path", str(enc),
                      "--bpe_path", str(bpe), "--cache_dir", str(tmp_path / "cache"), "--log_dir", str(out / "log"),
                      "--save_dir", str(out / "save"), "--submission_dir", str(out / "sub"), "--submit",
                      "--analysis"] + TINY)
    return task, data, out, res, capsys.readouterr().out


@pytest.mark.parametrize("name", ["sst-2", "mnli", "sts-b", "race"])
def test_one_dataset_per_family(tmp_path, capsys, name):
    task, data, out, res, stdout = run(tmp_path, name, capsys)
    lines = [json.loads(x) for x in (out / "log" / f"{name}.jsonl").read_text().splitlines()]
    assert lines[0]["dataset"] == name and [x["n_updates"] for x in lines[1:]] == [4, 8]  # 32 rows / 8
    assert (out / "save" / name / "model" / "config.json").is_file()
    meta = json.loads((out / "save" / name / "config.json").read_text())
    assert meta["task"] == name and meta["layout"]["n_ctx"] == res["n_ctx"] <= 64
    assert set(res["submissions"]) == {*task.eval_splits, *task.test_splits}
    for split, path in res["submissions"].items():
        truth = read_split(name, data, split)
        rows = [r.split("\t") for r in open(path, encoding="utf-8").read().splitlines()]
        assert rows[0] == ["index", "prediction"] and [r[0] for r in rows[1:]] == truth.ids
        preds = read_predictions(path, task)
        if task.label_names:
            assert {r[1] for r in rows[1:]} <= set(task.label_names)  # label names, as GLUE wants them
        if truth.labels is None:
            continue
        # every printed score is the prediction file's score against the file's labels
        title = ("Test" if split == "test" else split) if split in task.test_splits else \
            ("Valid" if len(task.eval_splits) == 1 else split)
        for metric, value in compute(task.metrics, truth.labels, preds).items():
            label = {"accuracy": "Accuracy", "pearson": "Pearson", "spearman": "Spearman"}[metric]
            m = re.search(rf"^{re.escape(task.display)} {title} {label}: +(-?\d+\.\d\d|nan)$", stdout, re.M)
            assert m, stdout
            if not np.isnan(value):
                assert float(m.group(1)) == pytest.approx(value, abs=0.005)


def test_bad_dataset_file_is_one_line_without_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    data = write_fixture("sst-2", tmp_path / "SST-2", n_rows=16, seed=0)
    lines = (data / "dev.tsv").read_text().splitlines()
    lines[3] = lines[3].split("\t")[0] + "\t7"  # a label outside {0, 1} on file line 4
    (data / "dev.tsv").write_text("\n".join(lines) + "\n")
    enc, bpe = tmp_path / "enc.json", tmp_path / "merges.bpe"
    learn_bpe(["a b c"], 2, enc, bpe)
    r = subprocess.run([sys.executable, "-m", "gpt1_fast.train", "--dataset", "sst-2", "--data_dir", str(data),
                        "--from_scratch", "--encoder_path", str(enc), "--bpe_path", str(bpe), "--cache_dir", "none",
                        "--log_dir", str(tmp_path / "log")] + TINY, capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert re.search(r"^error: .*dev\.tsv:4: .*7", r.stderr, re.M), r.stderr


def test_race_reports_its_levels_from_one_model(tmp_path, capsys):
    """One RACE model, scored on RACE-m, RACE-h and RACE (the paper's three columns): in the log, the
    printed lines and --analysis; the levels' accuracies recombine to the whole's."""
    task, data, out, res, stdout = run(tmp_path, "race", capsys)
    last = [json.loads(x) for x in (out / "log" / "race.jsonl").read_text().splitlines() if "n_epochs" in x][-1]
    levels = {lv: read_split("race", data, "dev").groups[lv] for lv in ("middle", "high")}
    n_m, n_h = len(levels["middle"]), len(levels["high"])
    assert n_m and n_h and n_m + n_h == len(read_split("race", data, "dev").ids)
    whole = (n_m * last["va_acc_RACE-m"] + n_h * last["va_acc_RACE-h"]) / (n_m + n_h)
    assert whole == pytest.approx(last["va_acc"], abs=1e-9)
    assert re.search(r"va_acc_RACE-m=\d+\.\d\d va_acc_RACE-h=\d+\.\d\d", stdout)
    for title in ("Valid", "Test"):
        for name in ("RACE", "RACE-m", "RACE-h"):
            assert re.search(rf"^{name} {title} Accuracy: +\d+\.\d\d$", stdout, re.M), (name, title, stdout)
    assert {"test_acc", "test_acc_RACE-m", "test_acc_RACE-h", "valid_acc_RACE-m"} <= set(res)


def test_sts_b_objective_flag_picks_the_head(tmp_path, capsys):
    from gpt1_fast import train

    from gpt1_fast.layout import EmbeddingLayout

    layout = EmbeddingLayout(10, n_ctx=12)
    args = train.build_parser().parse_args(["--dataset", "sts-b", "--from_scratch", "--n_layer", "1", "--n_embd", "16",
                                            "--n_head", "2", "--backend", "torch"])
    src = train.model_source(args)
    soft = train.build_model(args, get_task("sts-b", objective=args.stsb_objective), layout, src)
    assert args.stsb_objective == "soft_labels" and soft.task_head.linear.out_features == 6  # the release's
    reg = train.build_model(args, get_task("sts-b", objective="regression"), layout, src)
    assert reg.task_head.linear.out_features == 1
    with pytest.raises(SystemExit):
        train.cli(["--dataset", "sst-2", "--diagnostic", str(tmp_path / "diagnostic.tsv"), "--from_scratch"])
    assert "argument --diagnostic: GLUE's diagnostic set is scored by the MNLI model" in capsys.readouterr().err
