"""A GLUE submission: WNLI (majority class), AX (the MNLI model on the diagnostic set), and
`python -m gpt1_fast.glue` assembling and checking the 11 files, on tiny fixture files."""
import zipfile

import numpy as np
import pytest

from fixtures_tasks import GLUE_DIRS, WordEncoder, write_fixture
from gpt1_fast import glue
from gpt1_fast.tasks import get_task
from gpt1_fast.tasks.readers import DATASETS, read_split

GLUE_SETS = ("cola", "sst-2", "mrpc", "sts-b", "qqp", "mnli", "qnli", "rte", "wnli")


def write_diagnostic(folder, n=5):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"{i}\tThe cat sat number {i} .\tA cat sat ." for i in range(n)]
    (folder / "diagnostic.tsv").write_text("index\tsentence1\tsentence2\n" + "\n".join(rows) + "\n")
    return folder / "diagnostic.tsv"


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue_data")
    for name in GLUE_SETS:
        write_fixture(name, root / GLUE_DIRS[name], n_rows=16, seed=0, n_eval=5)
    write_diagnostic(root / "diagnostic")
    return root


def write_runs(tmp_path, glue_dir, skip=()):
    """One run folder per GLUE file, its submission/ holding valid predictions for the test file's ids."""
    runs = []
    for gf in glue.GLUE_FILES:
        if gf.name in skip:
            continue
        ids = glue.expected_ids(gf, glue_dir)
        task = glue._task(gf)
        pred = "2.5" if task.regression else task.label_names[-1]
        sub = tmp_path / "runs" / gf.name[:-4] / "submission"
        sub.mkdir(parents=True)
        (sub / gf.name).write_text("index\tprediction\n" + "".join(f"{i}\t{pred}\n" for i in ids))
        runs.append(sub.parent)
    return runs


def test_complete_set_is_zipped_with_all_eleven_files(tmp_path, glue_dir, capsys):
    runs = write_runs(tmp_path, glue_dir)
    out = tmp_path / "glue.zip"
    assert glue.main([*map(str, runs), "--out", str(out), "--glue_dir", str(glue_dir)]) == 0
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == sorted(gf.name for gf in glue.GLUE_FILES)
        assert z.read("RTE.tsv") == (runs[8] / "submission" / "RTE.tsv").read_bytes()
    assert len(glue.GLUE_FILES) == 11 and "wrote" in capsys.readouterr().out


def test_incomplete_set_says_exactly_what_is_wrong_and_writes_nothing(tmp_path, glue_dir, capsys):
    runs = write_runs(tmp_path, glue_dir, skip=("WNLI.tsv", "AX.tsv"))
    sub = {p.name: p / "submission" for p in runs}
    (sub["RTE"] / "RTE.tsv").write_text("index\tprediction\n0\tentailment\n1\t1\n2\t0\n3\tentailment\n4\tentailment\n")
    (sub["STS-B"] / "STS-B.tsv").write_text("index\tprediction\n0\t5.3\n1\t2\n2\t2\n3\t2\n4\t2\n")
    sst = (sub["SST-2"] / "SST-2.tsv")
    sst.write_text("\n".join(sst.read_text().splitlines()[:-1]) + "\n")  # a row short
    (sub["CoLA"] / "CoLA.tsv").write_text("id,label\n")
    dup = tmp_path / "runs" / "again" / "submission"
    dup.mkdir(parents=True)
    (dup / "MRPC.tsv").write_bytes((sub["MRPC"] / "MRPC.tsv").read_bytes())
    out = tmp_path / "glue.zip"
    assert glue.main([*map(str, runs), str(dup.parent), "--out", str(out), "--glue_dir", str(glue_dir)]) == 1
    err = capsys.readouterr().err.splitlines()
    r = str(tmp_path / "runs")
    assert err == [
        f"error: MRPC.tsv: in two runs, {r}/MRPC and {r}/again; pass only one of them",
        f"error: {r}/CoLA/submission/CoLA.tsv:1: expected the header 'index\\tprediction', found 'id,label'",
        f"error: {r}/SST-2/submission/SST-2.tsv: 4 rows, expected 5 (the test file)",
        f"error: {r}/SST-2/submission/SST-2.tsv: ids differ from the test file's: 1 missing (first ['4']), 0 not in it",
        f"error: {r}/STS-B/submission/STS-B.tsv:2: expected a score in [0, 5], found '5.3'",
        f"error: {r}/RTE/submission/RTE.tsv:3: expected a label in {{entailment, not_entailment}}, found '1' "
        "(and 1 more rows)",
        "error: WNLI.tsv: missing: no run's submission/WNLI.tsv (a wnli run, or --wnli_majority with --glue_dir)",
        "error: AX.tsv: missing: no run's submission/AX.tsv (the MNLI run given the diagnostic set (diagnostic.tsv))",
        f"error: {out} not written (8 problems)"]
    assert not out.exists()


def test_without_glue_dir_the_row_counts_are_glues_test_sets(tmp_path, glue_dir, monkeypatch, capsys):
    runs = write_runs(tmp_path, glue_dir)
    out = tmp_path / "glue.zip"
    assert glue.main([*map(str, runs), "--out", str(out)]) == 1  # the fixture's 5 rows are not GLUE's 1063
    err = capsys.readouterr().err
    assert "CoLA.tsv: 5 rows, expected 1063 (GLUE test set)" in err and "QQP.tsv: 5 rows, expected 390965" in err
    small = tuple(glue.GlueFile(gf.name, gf.dataset, gf.split, 5) for gf in glue.GLUE_FILES)
    monkeypatch.setattr(glue, "GLUE_FILES", small)
    assert glue.main([*map(str, runs), "--out", str(out)]) == 0 and out.is_file()


def test_wnli_is_glues_majority_class_baseline(tmp_path, glue_dir):
    runs = write_runs(tmp_path, glue_dir, skip=("WNLI.tsv",))
    out = tmp_path / "glue.zip"
    assert glue.main([*map(str, runs), "--out", str(out), "--glue_dir", str(glue_dir), "--wnli_majority"]) == 0
    with zipfile.ZipFile(out) as z:
        rows = z.read("WNLI.tsv").decode().splitlines()
    # not_entailment ("0") for every row: GLUE's baseline, 65.1 on its test set, whatever the training set holds
    assert rows[0] == "index\tprediction" and {r.split("\t")[1] for r in rows[1:]} == {"0"}
    assert [r.split("\t")[0] for r in rows[1:]] == read_split("wnli", glue_dir / "WNLI", "test").ids


def test_wnli_task_submits_the_majority_class_and_other_tasks_their_predictions():
    wnli = get_task("wnli")
    assert wnli.family == "entailment" and wnli.head_type == ("classification", 2) and wnli.display == "WNLI"
    preds = np.array([1, 1, 0])
    assert [wnli.format_prediction(p) for p in wnli.submission_predictions("test", preds)] == ["0", "0", "0"]
    assert wnli.submission_predictions("dev", preds).tolist() == [1, 1, 0]  # dev: the model's
    assert get_task("rte").submission_predictions("test", preds).tolist() == [1, 1, 0]


def test_mnli_with_the_diagnostic_set_predicts_ax(tmp_path, glue_dir):
    diag = write_diagnostic(tmp_path / "diag", n=7)
    task = get_task("mnli", diagnostic=diag)
    assert task.test_splits == ("test_matched", "test_mismatched", "test_ax")
    assert task.submission_file("test_ax") == "AX.tsv" and task.submission_file("test_matched") == "MNLI-m.tsv"
    data = task.load(glue_dir / "MNLI", WordEncoder(), (), n_ctx=64)
    ax = data.splits["test_ax"]
    assert len(ax) == 7 and ax.ids == [str(i) for i in range(7)] and ax.labels is None
    assert get_task("mnli").test_splits == ("test_matched", "test_mismatched")  # only when given
    with pytest.raises(ValueError, match="scored by the MNLI model, not by rte"):
        get_task("rte", diagnostic=diag)
    (tmp_path / "diag" / "diagnostic.tsv").write_text("index\tsentence1\n0\tx\n")
    with pytest.raises(Exception, match=r"diagnostic\.tsv:1: expected a header with the columns sentence1, sentence2"):
        task.load(glue_dir / "MNLI", WordEncoder(), (), n_ctx=64)


def test_glue_file_names_are_those_the_tasks_write():
    for gf in glue.GLUE_FILES:
        task = get_task("mnli", diagnostic="x.tsv") if gf.dataset == "ax" else get_task(gf.dataset)
        assert task.submission_file(gf.split) == gf.name, gf
    assert set(GLUE_SETS) <= set(DATASETS)


def test_known_row_counts_are_glues_test_sets():
    # the test splits' num_examples in Hugging Face's GLUE dataset card (the same files GLUE serves)
    sizes = {"CoLA.tsv": 1063, "SST-2.tsv": 1821, "MRPC.tsv": 1725, "STS-B.tsv": 1379, "QQP.tsv": 390965,
             "MNLI-m.tsv": 9796, "MNLI-mm.tsv": 9847, "QNLI.tsv": 5463, "RTE.tsv": 3000, "WNLI.tsv": 146,
             "AX.tsv": 1104}
    assert {gf.name: gf.rows for gf in glue.GLUE_FILES} == sizes
