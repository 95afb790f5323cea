"""Assemble a GLUE submission (gluebenchmark.com) from runs' test predictions, checked first.

    python -m gpt1_fast.glue runs/cola runs/sst-2 runs/mrpc runs/sts-b runs/qqp runs/mnli runs/qnli \\
        runs/rte runs/wnli --out glue_submission.zip [--glue_dir glue_data]

A run's test predictions are its `submission/<Task>.tsv` files (a folder given without a
`submission/` subfolder is read as one). The server takes one zip holding all of CoLA, SST-2, MRPC,
STS-B, QQP, MNLI-m, MNLI-mm, QNLI, RTE, WNLI and AX .tsv (AX: the MNLI model's predictions on GLUE's
diagnostic set, diagnostic.tsv; WNLI: GLUE's majority-class baseline, not_entailment everywhere,
which `gpt1_fast.train --dataset wnli` submits, or `--wnli_majority` here). Every file is checked:
its header `index<TAB>prediction`, its labels (GLUE's spelling; STS-B a score in [0, 5]), its row
count (GLUE's test sets; with --glue_dir the ids of the test files themselves). Each problem is one
`error:` line, and nothing is written unless all 11 files are right (exit 1 otherwise).
"""
from __future__ import annotations

import argparse
import math
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .cli import Parser
from .fileio import atomic_write


@dataclass(frozen=True)
class GlueFile:
    name: str  # the file the server expects ("MNLI-m.tsv")
    dataset: str  # tasks' dataset name; "ax": the diagnostic set, scored by the MNLI model
    split: str  # the test split it predicts
    rows: int  # GLUE's test set size


GLUE_FILES = (GlueFile("CoLA.tsv", "cola", "test", 1063), GlueFile("SST-2.tsv", "sst-2", "test", 1821),
              GlueFile("MRPC.tsv", "mrpc", "test", 1725), GlueFile("STS-B.tsv", "sts-b", "test", 1379),
              GlueFile("QQP.tsv", "qqp", "test", 390965), GlueFile("MNLI-m.tsv", "mnli", "test_matched", 9796),
              GlueFile("MNLI-mm.tsv", "mnli", "test_mismatched", 9847), GlueFile("QNLI.tsv", "qnli", "test", 5463),
              GlueFile("RTE.tsv", "rte", "test", 3000), GlueFile("WNLI.tsv", "wnli", "test", 146),
              GlueFile("AX.tsv", "ax", "test_ax", 1104))
BY_NAME = {gf.name: gf for gf in GLUE_FILES}
HEADER = "index\tprediction"
HINTS = {"AX.tsv": "the MNLI run given the diagnostic set (diagnostic.tsv)",
         "WNLI.tsv": "a wnli run, or --wnli_majority with --glue_dir"}


def _spec(gf: GlueFile):
    from .tasks.readers import DATASETS, DIAGNOSTIC

    return DIAGNOSTIC if gf.dataset == "ax" else DATASETS[gf.dataset]


def _task(gf: GlueFile):
    from .tasks.readers import DATASETS
    from .tasks.task import DatasetTask

    return DatasetTask(DATASETS["mnli" if gf.dataset == "ax" else gf.dataset])


def expected_ids(gf: GlueFile, glue_dir) -> list[str]:
    """The row ids of GLUE's test file for `gf` under glue_dir (its download layout: CoLA/test.tsv, ...,
    MNLI/test_matched.tsv, diagnostic/diagnostic.tsv)."""
    from .tasks.readers import read_split

    spec = _spec(gf)
    return read_split(spec, Path(glue_dir) / spec.folder, gf.split).ids


def find(runs) -> tuple[dict[str, Path], list[str]]:
    """{file name: path} of the GLUE files in the runs' submission folders, and the problems (a file
    in two runs, a run folder that does not exist)."""
    found, problems, where = {}, [], {}
    for run in map(Path, runs):
        folder = run / "submission" if (run / "submission").is_dir() else run
        if not folder.is_dir():
            problems.append(f"{run}: not found (a run folder holding submission/<Task>.tsv)")
            continue
        for gf in GLUE_FILES:
            path = folder / gf.name
            if path.is_file():
                if gf.name in found:
                    problems.append(f"{gf.name}: in two runs, {where[gf.name]} and {run}; pass only one of them")
                found[gf.name], where[gf.name] = path, run
    return found, problems


def check_file(path: Path, gf: GlueFile, ids: list[str] | None = None) -> list[str]:
    """The problems of one prediction file, one line each (none: it is what the server takes)."""
    task = _task(gf)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        return [f"{path}: expected UTF-8 text, found byte {e.object[e.start:e.start + 1]!r} at offset {e.start}"]
    if not lines or lines[0] != HEADER:
        return [f"{path}:1: expected the header 'index\\tprediction', found {lines[0] if lines else 'an empty file'!r}"]
    problems, got, bad = [], [], []
    for n, line in enumerate(lines[1:], 2):
        cells = line.split("\t")
        if len(cells) != 2:
            problems.append(f"{path}:{n}: expected 2 tab-separated columns (index, prediction), found {len(cells)}")
            return problems
        got.append(cells[0])
        if not _valid(task, cells[1]):
            bad.append((n, cells[1]))
    if bad:
        n, value = bad[0]
        more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
        problems.append(f"{path}:{n}: expected {_labels(task)}, found {value!r}{more}")
    want = gf.rows if ids is None else len(ids)
    if len(got) != want:
        problems.append(f"{path}: {len(got)} rows, expected {want} ({'the test file' if ids else 'GLUE test set'})")
    if len(set(got)) != len(got):
        problems.append(f"{path}: an index appears more than once ({len(got) - len(set(got))} repeats)")
    if ids is not None and set(got) != set(ids):
        missing = sorted(set(ids) - set(got))
        problems.append(f"{path}: ids differ from the test file's: {len(missing)} missing (first {missing[:3]}), "
                        f"{len(set(got) - set(ids))} not in it")
    return problems


def _valid(task, value: str) -> bool:
    try:
        p = task.parse_prediction(value)
    except ValueError:
        return False
    return not task.regression or (math.isfinite(p) and task.score_range[0] <= p <= task.score_range[1])


def _labels(task) -> str:
    if task.regression:
        return f"a score in [{task.score_range[0]:g}, {task.score_range[1]:g}]"
    return "a label in {" + ", ".join(task.label_names) + "}"


def wnli_majority(glue_dir) -> str:
    """WNLI.tsv's text from GLUE's WNLI folder: every test row GLUE's majority-class baseline label."""
    import numpy as np

    from .tasks.readers import DATASETS, read_split

    task, folder = _task(BY_NAME["WNLI.tsv"]), Path(glue_dir) / DATASETS["wnli"].folder
    test = read_split("wnli", folder, "test")
    preds = task.submission_predictions("test", np.zeros(len(test), dtype=np.int64))
    return HEADER + "\n" + "".join(f"{i}\t{task.format_prediction(p)}\n" for i, p in zip(test.ids, preds))


def assemble(runs, out, glue_dir=None, majority_wnli: bool = False) -> list[str]:
    """Check the runs' GLUE files and write the zip; -> the problems (then nothing is written)."""
    from .errors import DataError

    found, problems = find(runs)
    texts = {}
    try:
        if majority_wnli and "WNLI.tsv" not in found:
            texts["WNLI.tsv"] = wnli_majority(glue_dir)
    except DataError as e:
        problems.append(str(e))
    for gf in GLUE_FILES:
        if gf.name in found:
            try:
                problems += check_file(found[gf.name], gf, expected_ids(gf, glue_dir) if glue_dir else None)
            except DataError as e:  # a test file of --glue_dir
                problems.append(str(e))
        elif gf.name not in texts and not (majority_wnli and gf.name == "WNLI.tsv"):
            hint = HINTS.get(gf.name, f"a {gf.dataset} run with --submit")
            problems.append(f"{gf.name}: missing: no run's submission/{gf.name} ({hint})")
    if problems:
        return problems

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            for gf in GLUE_FILES:
                data = texts[gf.name].encode() if gf.name in texts else found[gf.name].read_bytes()
                z.writestr(gf.name, data)

    atomic_write(out, write, mode="wb")
    return []


def build_parser() -> Parser:
    p = Parser(prog="python -m gpt1_fast.glue", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders whose submission/ holds GLUE .tsv files")
    p.add_argument("--out", default="glue_submission.zip", help="the zip to write (default glue_submission.zip)")
    p.add_argument("--glue_dir", default=None,
                   help="GLUE's data folder (CoLA/, SST-2/, ..., MNLI/, WNLI/, diagnostic/): check each file's "
                        "ids against its test file (default: check the row counts of GLUE's test sets)")
    p.add_argument("--wnli_majority", action="store_true",
                   help="when no run has WNLI.tsv, write it: the majority class of WNLI/train.tsv for every "
                        "row of WNLI/test.tsv (GLUE's baseline; needs --glue_dir)")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.wnli_majority and not args.glue_dir:
        p.error("--wnli_majority needs --glue_dir (WNLI/train.tsv and WNLI/test.tsv)")
    try:
        problems = assemble(args.runs, args.out, args.glue_dir, args.wnli_majority)
    except OSError as e:
        problems = [str(e)]
    if problems:
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        print(f"error: {args.out} not written ({len(problems)} problem{'s' * (len(problems) > 1)})", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {', '.join(gf.name for gf in GLUE_FILES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
