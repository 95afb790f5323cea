"""Every entry point, every mistake one line: `error: ...` on standard error, exit code 2 for a flag
and 1 for a file, folder, environment or missing package, no traceback, nothing on standard output,
and every file of the earlier runs byte-identical (nothing written, nothing deleted before the check).
train's own table, with more of its cases: tests/test_reliability.py. The estimators raise a
ValueError naming the keyword or the data instead."""
from __future__ import annotations

import importlib
import json
import sys

import pytest
import torch

from runs_fixture import TINY, pretrain_args, snapshot, vocab_args

pytest.importorskip("spacy")
pytest.importorskip("ftfy")
NO_CUDA = not torch.cuda.is_available()


def _bad_utf8(d):
    p = d / "latin1.txt"
    p.write_bytes(b"a fine line\ncaf\xe9\n")
    return p


def _empty(d):
    p = d / "empty.txt"
    p.write_text("")
    return p


def _bad_vocab(d):
    p = d / "bad_vocab.json"
    p.write_text('{"a</w>": 1,')
    return p


def _folder(d):
    (d / "a_folder").mkdir(exist_ok=True)
    return d / "a_folder"


def replacing_data(base: list[str], extra) -> list[str]:
    """base + extra, where a `--data X` in extra replaces base's (given twice, --data takes both)."""
    extra = list(extra)
    if extra[:1] == ["--data"]:
        i = base.index("--data")
        base = base[:i] + base[i + 2:]
    return [*base, *extra]


def pretrain(d, *extra):
    return replacing_data(pretrain_args(d, d / "new_pre"), extra)


def generate(d, *extra):
    return ["--model_dir", str(d / "pre"), "--device", "cpu", "--backend", "torch", "--max_new_tokens", "2", *extra]


def predict(d, *extra):
    return ["--model_dir", str(d / "runs" / "earlier" / "model"), "--device", "cpu", "--backend", "torch", *extra]


def zeroshot(d, *extra):
    return ["--model_dir", str(d / "pre"), "--dataset", "sst-2", "--data_dir", str(d / "SST-2"), "--device", "cpu",
            "--backend", "torch", "--limit", "4", *extra]


def vocab(d, *extra):
    return replacing_data(["--data", str(d / "book.txt"), "--out", str(d / "new_vocab"), "--merges", "10", "--quiet"],
                          extra)


def folder(d, *extra):
    return [str(d / "pre"), str(d / "converted"), *extra]


# id, module, argv(d), exit code, what the one line must say; `hide`: a package made unimportable
CASES = [
    # ------------------------------------------------------------------------------------ pretrain
    ("pretrain/n_layer_0", "pretrain", lambda d: pretrain(d, "--n_layer", "0"), 2,
     "argument --n_layer: expected an integer >= 1, got '0'"),
    ("pretrain/n_embd_0", "pretrain", lambda d: pretrain(d, "--n_embd", "0"), 2, "argument --n_embd: expected an integer"),
    ("pretrain/device_cuda", "pretrain", lambda d: pretrain(d, "--device", "cuda"), 2, "argument --device: 'cuda' is not"),
    ("pretrain/backend_triton", "pretrain", lambda d: pretrain(d, "--backend", "triton"), 2, "TRITON_INTERPRET=1"),
    ("pretrain/out_file", "pretrain", lambda d: pretrain(d, "--out", str(d / "a_file")), 2,
     "argument --out: expected a folder to write into, got"),
    ("pretrain/tokens_dir_file", "pretrain", lambda d: pretrain(d, "--tokens_dir", str(d / "a_file")), 2,
     "argument --tokens_dir: expected a folder to write into"),
    ("pretrain/missing_data", "pretrain", lambda d: pretrain(d, "--data", str(d / "nothing.txt")), 1,
     "nothing.txt: no such file or folder"),
    ("pretrain/empty_data", "pretrain", lambda d: pretrain(d, "--data", str(_empty(d))), 1,
     "empty.txt: no text to pretrain on (empty, or only blank lines)"),
    ("pretrain/bad_vocab", "pretrain", lambda d: pretrain(d, "--encoder_path", str(_bad_vocab(d))), 1,
     "bad_vocab.json: expected a BPE encoder (a JSON object token -> id), found invalid JSON"),
    ("pretrain/max_grad_norm_nan", "pretrain", lambda d: pretrain(d, "--max_grad_norm", "nan"), 2,
     "argument --max_grad_norm: expected a number >= 0, got 'nan'"),
    ("pretrain/earlier_checkpoints", "pretrain", lambda d: pretrain(d, "--out", str(d / "pre")), 2,
     "holds the checkpoints of an earlier run (step_000000002.pt): pass --resume to continue it"),
    ("pretrain/no_spacy", "pretrain", lambda d: pretrain(d), 1, "encoding the corpus needs spacy", "spacy"),
    # ------------------------------------------------------------------------------------ generate
    ("generate/prompt_file_not_utf8", "generate", lambda d: generate(d, "--prompt_file", str(_bad_utf8(d))), 1,
     "latin1.txt:2: expected UTF-8 text, found byte b'\\xe9'"),
    ("generate/prompt_file_empty", "generate", lambda d: generate(d, "--prompt_file", str(_empty(d))), 1,
     "empty.txt: no prompt in it"),
    ("generate/prompt_file_missing", "generate", lambda d: generate(d, "--prompt_file", str(d / "nope.txt")), 1,
     "nope.txt: not found"),
    ("generate/device_cuda", "generate", lambda d: generate(d, "--prompt", "x", "--device", "cuda"), 2,
     "argument --device: 'cuda' is not available"),
    ("generate/backend_triton", "generate", lambda d: generate(d, "--prompt", "x", "--backend", "triton"), 2,
     "argument --backend: 'triton' on cpu needs a CUDA GPU"),
    ("generate/bad_vocab", "generate", lambda d: generate(d, "--prompt", "x", "--encoder_path", str(_bad_vocab(d))), 1,
     "bad_vocab.json: expected a BPE encoder"),
    ("generate/from_scratch_n_head", "generate", lambda d: ["--from_scratch", *vocab_args(d), "--n_embd", "32",
                                                            "--n_head", "3", "--prompt", "x"], 2,
     "argument --n_head: 3 does not divide --n_embd 32"),
    ("generate/n_ctx_beyond_the_model", "generate", lambda d: generate(d, "--prompt", "x", "--n_ctx", "1000"), 2,
     "argument --n_ctx: 1000 exceeds the 16 positions of the model"),
    ("generate/stop_empty", "generate", lambda d: generate(d, "--prompt", "x", "--stop", ""), 2,
     "argument --stop: expected a non-empty stop string, got ''"),
    ("generate/stop_no_tokens", "generate", lambda d: generate(d, "--prompt", "x", "--stop", " "), 2,
     "argument --stop: ' ' encodes to no tokens"),
    ("generate/prompt_too_long", "generate", lambda d: generate(d, "--prompt", "Anna " * 20), 2,
     "argument --prompt: prompt 1 has 20 tokens, the model's context 16: no room for a new token; shorten it, or "
     "pass --sliding"),
    ("generate/model_dir_file", "generate", lambda d: generate(d, "--prompt", "x", "--model_dir", str(d / "a_file")),
     1, "a_file: damaged or not a torch checkpoint"),
    ("generate/model_dir_missing", "generate", lambda d: generate(d, "--prompt", "x", "--model_dir", str(d / "nope")),
     1, "nope: not found; expected a model folder"),
    ("generate/no_spacy", "generate", lambda d: generate(d, "--prompt", "x"), 1, "encoding the prompts needs spacy",
     "spacy"),
    # ------------------------------------------------------------------------------------- predict
    ("predict/no_data", "predict", lambda d: predict(d), 2, "argument --data: give a file (--data FILE)"),
    ("predict/language_model", "predict", lambda d: predict(d, "--model_dir", str(d / "pre"), "--data",
                                                            str(d / "book.txt")), 2, "this model has no task head"),
    ("predict/missing_file", "predict", lambda d: predict(d, "--data", str(d / "nope.csv")), 1, "nope.csv: not found"),
    ("predict/not_utf8", "predict", lambda d: predict(d, "--data", str(_bad_utf8(d))), 1, "latin1.txt"),
    ("predict/empty", "predict", lambda d: predict(d, "--data", str(_empty(d))), 1, "empty.txt"),
    ("predict/predictions_folder", "predict", lambda d: predict(d, "--data", str(d / "book.txt"), "--predictions",
                                                                str(_folder(d))), 2,
     "argument --predictions: expected a file to write, got"),
    ("predict/predictions_under_file", "predict", lambda d: predict(d, "--data", str(d / "book.txt"), "--predictions",
                                                                    str(d / "a_file" / "p.tsv")), 2,
     "a_file is a file, not a folder"),
    ("predict/unknown_split", "predict", lambda d: predict(d, "--data_dir", str(d / "data"), "--split", "nosuch"), 2,
     "argument --split: rocstories has no split 'nosuch'"),
    ("predict/another_head", "predict", lambda d: predict(d, "--data_dir", str(d / "SST-2"), "--dataset", "sst-2"), 2,
     "argument --dataset: sst-2's head is"),
    ("predict/device_cuda", "predict", lambda d: predict(d, "--data", str(d / "book.txt"), "--device", "cuda"), 2,
     "argument --device: 'cuda' is not available"),
    ("predict/no_sklearn", "predict", lambda d: predict(d, "--data_dir", str(d / "data")), 1,
     "needs scikit-learn, which is not installed: pip install scikit-learn", "sklearn"),
    # --------------------------------------------------------------------------------------- vocab
    ("vocab/empty_file", "vocab", lambda d: vocab(d, "--data", str(_empty(d))), 1,
     "empty.txt: no text to learn a vocabulary from"),
    ("vocab/missing_file", "vocab", lambda d: vocab(d, "--data", str(d / "nope.txt")), 1, "nope.txt: no such file"),
    ("vocab/out_file", "vocab", lambda d: vocab(d, "--out", str(d / "a_file")), 2, "argument --out: expected a folder"),
    ("vocab/merges_0", "vocab", lambda d: vocab(d, "--merges", "0"), 2, "argument --merges: expected an integer >= 1"),
    ("vocab/no_spacy", "vocab", lambda d: vocab(d), 1, "learning a vocabulary (texts are pre-tokenized as TextEncoder "
     "does) needs spacy", "spacy"),
    # ---------------------------------------------------------------------------------------- plot
    ("plot/out_folder", "plot", lambda d: [str(d / "pre" / "log.jsonl"), "--out", str(_folder(d))], 2,
     "argument --out: expected a file to write, got"),
    ("plot/missing_log", "plot", lambda d: [str(d / "nope.jsonl")], 1, "nope.jsonl: log not found"),
    ("plot/not_a_log", "plot", lambda d: [str(d / "book.txt"), "--out", str(d / "x.png")], 1, "book.txt: no loss records"),
    ("plot/no_matplotlib", "plot", lambda d: [str(d / "pre" / "log.jsonl"), "--out", str(d / "x.png")], 1,
     "plotting needs matplotlib, which is not installed", "matplotlib"),
    # ----------------------------------------------------------------------------------- synthetic
    ("synthetic/out_file", "synthetic", lambda d: ["--out", str(d / "a_file")], 2, "argument --out: expected a folder"),
    ("synthetic/n_0", "synthetic", lambda d: ["--out", str(d / "syn"), "--n", "0"], 2,
     "argument --n: expected an integer >= 1, got '0'"),
    ("synthetic/existing_data", "synthetic", lambda d: ["--out", str(d / "data")], 2,
     "already holds Story Cloze files (cloze_test_val__spring2016 - cloze_test_ALL_val.csv); pass --overwrite"),
    # ------------------------------------------------------------------------------------ zeroshot
    ("zeroshot/scores_folder", "zeroshot", lambda d: zeroshot(d, "--scores", str(_folder(d))), 2,
     "argument --scores: expected a file to write"),
    ("zeroshot/plot_folder", "zeroshot", lambda d: zeroshot(d, "--scores", str(d / "s.jsonl"), "--plot",
                                                            str(_folder(d)), "--best", "sst-2=91"), 2,
     "argument --plot: expected a file to write"),
    ("zeroshot/plot_without_best", "zeroshot", lambda d: zeroshot(d, "--scores", str(d / "s.jsonl"), "--plot",
                                                                  str(d / "z.png")), 2,
     "argument --plot: it needs --scores (or --checkpoints) and a --best"),
    ("zeroshot/missing_data", "zeroshot", lambda d: zeroshot(d, "--data_dir", str(d / "nope")), 1, "dev.tsv: not found"),
    ("zeroshot/model_dir_file", "zeroshot", lambda d: zeroshot(d, "--model_dir", str(d / "a_file")), 1,
     "a_file: damaged or not a torch checkpoint"),
    ("zeroshot/no_matplotlib", "zeroshot", lambda d: zeroshot(d, "--scores", str(d / "s.jsonl"), "--plot",
                                                              str(d / "z.png"), "--best", "sst-2=91"), 1,
     "--plot needs matplotlib", "matplotlib"),
    # -------------------------------------------------------------------------------------- folder
    ("folder/dst_file", "folder", lambda d: folder(d)[:1] + [str(d / "a_file")], 2, "argument dst: expected a folder"),
    ("folder/dst_holds_a_model", "folder", lambda d: folder(d)[:1] + [str(d / "runs" / "earlier" / "model")], 2,
     "already holds a model (config.json): pass --overwrite"),
    ("folder/src_missing", "folder", lambda d: [str(d / "nope"), str(d / "converted")], 1, "nope: not found"),
    ("folder/half_a_vocabulary", "folder", lambda d: folder(d, "--encoder_path", str(d / "vocab" / "enc.json")), 2,
     "give both --encoder_path and --bpe_path"),
    # -------------------------------------------------------------------------------- train: packages
    ("train/no_sklearn", "train", lambda d: ["--data_dir", str(d / "data"), "--model_dir", str(d / "pre"), *TINY,
                                             "--runs_dir", str(d / "runs"), "--desc", "earlier", "--overwrite"], 1,
     "scoring ROCStories needs scikit-learn, which is not installed", "sklearn"),
    ("train/no_spacy", "train", lambda d: ["--data_dir", str(d / "data"), "--model_dir", str(d / "pre"), *TINY,
                                           "--runs_dir", str(d / "runs"), "--desc", "earlier", "--overwrite",
                                           "--cache_dir", "none"], 1, "encoding text needs spacy", "spacy"),
]


def run_cli(module: str, argv: list[str], capsys):
    """The entry point's command-line function in this process: (exit code, stdout, stderr)."""
    mod = importlib.import_module(f"gpt1_fast.{module}")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        getattr(mod, "cli", mod.main)(argv)
    out, err = capsys.readouterr()
    code = e.value.code
    if isinstance(code, str):  # SystemExit("error: ..."): Python prints it on standard error, exit code 1
        err, code = err + code + "\n", 1
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_mistake_is_one_line_and_writes_nothing(tiny_runs, case, capsys, monkeypatch):
    name, module, argv, code, want, *hide = case
    if "cuda" in name and not NO_CUDA:
        pytest.skip("CUDA is available here")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # as on a machine without a GPU: Triton needs one
    d = tiny_runs
    argv = argv(d)  # the cases' input files are written here, before the snapshot
    for package in hide:
        monkeypatch.setitem(sys.modules, package, None)  # as if not installed
    before = snapshot(d)
    got, out, err = run_cli(module, argv, capsys)
    lines = err.splitlines()
    assert got == code, (got, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], err
    assert "Traceback" not in err and out == "", out
    assert snapshot(d) == before  # nothing written, nothing deleted


# ---------------------------------------------------------------------------------- the estimators
def _fitted_choice(d):
    from gpt1_fast import MultipleChoice

    return MultipleChoice(**estimator_kw(d)).fit([("A story.", ["yes", "no"])] * 4, [0, 1, 0, 1])


def estimator_kw(d, **kw):
    return {**dict(from_scratch=True, encoder_path=str(d / "vocab" / "enc.json"), bpe_path=str(d / "vocab" / "merges.bpe"),
                   n_layer=1, n_embd=32, n_head=2, device="cpu", backend="torch", n_batch=4, n_iter=1), **kw}


TEXTS, LABELS = ["a good film", "bad", "great", "awful"], [1, 0, 1, 0]
ESTIMATOR_CASES = [  # id, what it does (d -> call), the error's start
    ("n_iter_0", lambda d, E: E.Classifier(**estimator_kw(d, n_iter=0)).fit(TEXTS, LABELS),
     "n_iter: expected an integer >= 1, got 0"),
    ("max_grad_norm_nan", lambda d, E: E.Classifier(**estimator_kw(d, max_grad_norm=float("nan"))).fit(TEXTS, LABELS),
     "max_grad_norm: expected a number >= 0, got nan"),
    ("device_cuda", lambda d, E: E.Classifier(**estimator_kw(d, device="cuda")).fit(TEXTS, LABELS),
     "device: 'cuda' is not available"),
    ("one_class", lambda d, E: E.Classifier(**estimator_kw(d)).fit(TEXTS, [1, 1, 1, 1]),
     "y has one class (1): a classifier needs at least two"),
    ("no_examples", lambda d, E: E.Classifier(**estimator_kw(d)).fit([], []), "y is empty"),
    ("nan_target", lambda d, E: E.Regressor(**estimator_kw(d)).fit(TEXTS, [1.0, float("nan"), 0.5, 0.2]),
     "y[1]: expected a finite number, got nan"),
    ("other_number_of_answers", lambda d, E: _fitted_choice(d).predict([("A story.", ["yes", "no", "maybe"])]),
     "X: 3 answers per example, this model was fitted with 2"),
    ("n_head", lambda d, E: E.Classifier(**estimator_kw(d, n_head=3)).fit(TEXTS, LABELS), "n_head: 3 does not divide"),
]


@pytest.mark.parametrize("case", ESTIMATOR_CASES, ids=[c[0] for c in ESTIMATOR_CASES])
def test_estimator_mistakes_are_value_errors(tiny_runs, case):
    import gpt1_fast

    name, call, want = case
    if name == "device_cuda" and not NO_CUDA:
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError) as e:
        call(tiny_runs, gpt1_fast)
    assert str(e.value).startswith(want), str(e.value)


# ------------------------------------------------------------------------------- missing packages
@pytest.mark.parametrize("code, want", [
    ("from gpt1_fast import Classifier", "Classifier (a scikit-learn estimator) needs scikit-learn"),
    ("from gpt1_fast.train import cli; cli(ARGS)", "error: scoring ROCStories needs scikit-learn"),
])
def test_a_missing_package_in_a_fresh_process(tiny_runs, code, want):
    """The check runs before the package is first imported (no module imports it at the top)."""
    import subprocess
    from pathlib import Path

    d = tiny_runs
    args = ["--data_dir", str(d / "data"), "--from_scratch", *vocab_args(d), *TINY, "--runs_dir", str(d / "runs"),
            "--desc", "earlier", "--overwrite"]
    prog = f"import sys; sys.modules['sklearn'] = None; ARGS = {json.dumps(args)}; {code}"
    before = snapshot(d)
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 1 and want in r.stderr and r.stderr.count("Traceback") <= 1, r.stderr
    assert "pip install scikit-learn" in r.stderr and '".[tasks]"' in r.stderr
    assert snapshot(d) == before
