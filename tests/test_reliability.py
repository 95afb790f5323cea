"""Nothing lost, every mistake one clear line: damaged cache files, --help of every entry point."""
from __future__ import annotations

import importlib
import pkgutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gpt1_fast
from fixtures_tasks import CountingEncoder  # the encoding-cache tests' stand-in encoder
from runs_fixture import base_args, snapshot
from gpt1_fast import cli, synthetic
from gpt1_fast.errors import DataError
from gpt1_fast.tasks import rocstories
from gpt1_fast.tasks.cache import encode_texts


# ------------------------------------------------------------------------------ encoding cache
def _flip(offset):
    def damage(p: Path):
        b = bytearray(p.read_bytes())
        b[offset % len(b)] ^= 0xFF
        p.write_bytes(bytes(b))
    return damage


def _first_data_byte(p: Path) -> int:
    with zipfile.ZipFile(p) as z:
        info = z.infolist()[0]
    return info.header_offset + 30 + len(info.filename) + len(info.extra) + 64  # inside the .npy payload


def _wrong_lengths(p: Path):
    with np.load(p) as z:
        arrays = dict(z)
    arrays["l_story"] = arrays["l_story"][::-1].copy() + 1  # same count of texts, lengths no longer sum to the ids
    np.savez(p, **arrays)


def _fewer_texts(p: Path):
    with np.load(p) as z:
        arrays = dict(z)
    n = int(arrays["l_story"][:-1].sum())
    arrays["f_story"], arrays["l_story"] = arrays["f_story"][:n], arrays["l_story"][:-1]  # consistent, one text short
    np.savez(p, **arrays)


DAMAGES = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(b"not a zip file at all" * 10),
    "crc": lambda p: _flip(_first_data_byte(p))(p),
    "missing_array": lambda p: np.savez(p, f_story=np.zeros(3, np.int32)),
    "wrong_lengths": _wrong_lengths,
    "fewer_texts": _fewer_texts,
}


def _encode(csv_path, vocab, cache, enc):
    """A Story Cloze file's fields through the one encoding cache of every dataset."""
    s = rocstories.read_csv(csv_path)
    texts = {"story": s.stories, "ending": s.endings1 + s.endings2}
    return encode_texts(texts, enc, [csv_path], [vocab], cache, tag="rocstories")


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_cache_is_named_deleted_and_rebuilt(tmp_path, capsys, damage):
    synthetic.write_rocstories(tmp_path / "d", n=30, n_test=8)
    csv_path, vocab, cache = tmp_path / "d" / rocstories.VAL_FILE, tmp_path / "vocab.json", tmp_path / "cache"
    vocab.write_text("{}")
    enc = CountingEncoder()
    first = _encode(csv_path, vocab, cache, enc)
    cache_file, = cache.glob("*.npz")
    assert enc.calls == 2 and capsys.readouterr().err == ""

    DAMAGES[damage](cache_file)
    again = _encode(csv_path, vocab, cache, enc)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: damaged encoding cache file") and str(cache_file) in err[0], err
    assert enc.calls == 4  # encoded again
    assert again == first

    third = _encode(csv_path, vocab, cache, enc)  # the rebuilt file loads
    assert enc.calls == 4 and capsys.readouterr().err == "" and third == first
    assert sorted(p.name for p in cache.iterdir()) == [cache_file.name]  # no temporaries left


def test_any_flipped_byte_never_gives_wrong_ids(tmp_path, capsys):
    """Wherever the damage lands, the result is the true encoding: read back intact, or rebuilt."""
    synthetic.write_rocstories(tmp_path / "d", n=12, n_test=4)
    csv_path, vocab, cache = tmp_path / "d" / rocstories.VAL_FILE, tmp_path / "vocab.json", tmp_path / "cache"
    vocab.write_text("{}")
    truth = _encode(csv_path, vocab, cache, CountingEncoder())
    cache_file, = cache.glob("*.npz")
    size = cache_file.stat().st_size
    for offset in np.random.RandomState(0).randint(0, size, 40):
        good = cache_file.read_bytes()
        _flip(int(offset))(cache_file)
        got = _encode(csv_path, vocab, cache, CountingEncoder())
        assert got == truth, offset
        if capsys.readouterr().err == "":  # undetected: the flip hit bytes that do not carry ids
            cache_file.write_bytes(good)


@pytest.mark.parametrize("name", ["rocstories", "sst-2", "race"])
def test_every_dataset_has_the_one_cache_policy(tmp_path, capsys, name):
    """Each dataset's cache files: damaged ones are named, deleted and rebuilt; the data is unchanged."""
    from fixtures_tasks import write_fixture
    from gpt1_fast.tasks import get_task

    data, cache, enc, task = write_fixture(name, tmp_path / "d", n_rows=24, seed=1), tmp_path / "cache", CountingEncoder(), \
        get_task(name)
    first = task.load(data, enc, (), n_valid=8, cache_dir=cache)
    files, calls = sorted(cache.glob("*.npz")), enc.calls
    assert len(files) == len(task.spec.splits) and capsys.readouterr().err == ""  # one per source file
    for f in files:
        DAMAGES["garbage"](f)
    again = task.load(data, enc, (), n_valid=8, cache_dir=cache)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(files) and all(line.startswith(f"warning: damaged encoding cache file {f} (") and
                                          line.endswith("); deleting it and encoding again") for line, f in zip(sorted(err), files))
    assert enc.calls == 2 * calls and sorted(cache.glob("*.npz")) == files
    for k, split in first.splits.items():
        assert np.array_equal(split.tokens, again.splits[k].tokens) and split.ids == again.splits[k].ids


# ------------------------------------------------------------------------------ --help forms
def _entry_modules():
    for m in pkgutil.walk_packages(gpt1_fast.__path__, "gpt1_fast."):
        spec = importlib.util.find_spec(m.name)
        origin = Path(spec.origin) if spec and spec.origin else None
        if origin and origin.suffix == ".py" and 'if __name__ == "__main__"' in origin.read_text(encoding="utf-8"):
            yield m.name


ENTRY_MODULES = sorted(set(_entry_modules()) | {"gpt1_fast.train", "gpt1_fast.generate", "gpt1_fast.demo",
                                                 "gpt1_fast.synthetic"})


@pytest.mark.parametrize("name", ENTRY_MODULES)
def test_help_names_the_python_m_form(name, capsys):
    mod = importlib.import_module(name)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {name} "), out[:200]
    assert "SPEC" not in out and "§" not in out  # no document the user does not have


# ------------------------------------------------------------------------------ text files
def test_non_utf8_csv_names_file_line_and_column(tmp_path):
    synthetic.write_rocstories(tmp_path, n=6, n_test=2)
    path = tmp_path / rocstories.VAL_FILE
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3][:5] + b"\xe9" + lines[3][5:]  # Latin-1 e-acute on line 4, column 6
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError) as e:
        rocstories.read_csv(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:4: expected UTF-8 text, found byte b'\\xe9' at column 6") and "\n" not in msg


def test_missing_csv_is_one_line(tmp_path):
    from gpt1_fast.tasks.readers import read_split

    with pytest.raises(DataError) as e:
        read_split("rocstories", tmp_path, "test")
    assert "\n" not in str(e.value) and "python -m gpt1_fast.synthetic" in str(e.value)


# ------------------------------------------------------------------------------ argument types
@pytest.mark.parametrize("kind, good, bad, want", [
    (cli.Int(1), [("1", 1), ("64", 64)], ["0", "-4", "1.5", "x"], "expected an integer >= 1"),
    (cli.Int(-1), [("-1", -1), ("0", 0)], ["-2"], "expected an integer >= -1"),
    (cli.Float(0.0, 1.0, hi_open=True), [("0", 0.0), ("0.1", 0.1)], ["1", "1.5", "-0.1", "nan", "x"],
     "expected a number in [0, 1)"),
    (cli.Float(0.0, lo_open=True), [("6.25e-5", 6.25e-5)], ["0", "-1", "inf"], "expected a number > 0"),
    (cli.Float(0.0), [("0", 0.0)], ["-0.5", "nan"], "expected a number >= 0"),
    (cli.Int(0, 2 ** 32 - 1), [("0", 0), ("4294967295", 2 ** 32 - 1)], ["-1", "4294967296"],
     "expected an integer in [0, 4294967295]"),
])
def test_argument_types(kind, good, bad, want, capsys):
    p = cli.Parser(prog="python -m gpt1_fast.x")
    cli.add_option(p, cli.Option("v", kind, None, "a value"), None)
    for text, value in good:
        assert p.parse_args(["--v", text]).v == value
        assert kind.convert(value) == value  # the same check on a Python value (an estimator keyword)
    for text in bad:
        with pytest.raises(SystemExit) as e:
            p.parse_args(["--v", text])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err == f"error: argument --v: {want}, got {text!r} (see python -m gpt1_fast.x --help)\n"
        with pytest.raises(ValueError, match=want.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            kind.convert(text)


def test_device_and_backend_checks(monkeypatch):
    import torch

    from gpt1_fast.errors import UsageError

    assert cli.check_device("cpu") == torch.device("cpu")
    for spec, want in [("tpu", "--device: expected cpu, cuda or cuda:N, got 'tpu'"), ("nonsense", "expected cpu, cuda")]:
        with pytest.raises(UsageError, match=want):
            cli.check_device(spec)
    with pytest.raises(UsageError, match="^device: expected cpu"):  # an estimator keyword's name
        cli.check_device("tpu", name=lambda n: n)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match=r"^--device: 'cuda' is not available \(.*use --device cpu"):
            cli.check_device("cuda")
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(UsageError, match="TRITON_INTERPRET=1.*--backend torch"):
        cli.check_backend("triton", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    cli.check_backend("triton", torch.device("cpu"))  # the interpreter runs them
    cli.check_backend("torch", torch.device("cpu"))


# ------------------------------------------------------------------------------ train: bad input matrix
# Each case: one `error:` line on stderr naming what is wrong, the exit code, no traceback, and the
# files of an earlier run with the same --desc byte-identical afterwards (the cases pass --overwrite,
# so a check that came after the first write would show as deleted or rewritten files).
@pytest.fixture(scope="module")
def work(tiny_runs):
    return tiny_runs


def _bad_data(d):
    out = d / "bad_utf8"
    if not out.exists():
        out.mkdir()
        for name in (rocstories.VAL_FILE, rocstories.TEST_FILE):
            (out / name).write_bytes((d / "data" / name).read_bytes())
        lines = (out / rocstories.VAL_FILE).read_bytes().split(b"\n")
        lines[6] = b"\xff" + lines[6]
        (out / rocstories.VAL_FILE).write_bytes(b"\n".join(lines))
    return ["--data_dir", str(out)]


def _damaged_release(d):
    out = d / "damaged_model"
    if not out.exists():
        out.mkdir()
        (out / "params_shapes.json").write_text("[[64, 32], [")  # truncated JSON
        np.save(out / "params_0.npy", np.zeros(3, np.float32))
    return ["--model_dir", str(out)]


def _bad_race(d):
    """A RACE folder whose one article has `questions` that is not a list."""
    import json

    out = d / "bad_race"
    for split in ("train", "dev", "test"):
        for level in ("middle", "high"):
            (out / split / level).mkdir(parents=True, exist_ok=True)
    (out / "train" / "middle" / "1.txt").write_text(json.dumps(
        {"article": "A.", "questions": 3, "options": [["a", "b", "c", "d"]], "answers": ["A"], "id": "middle1.txt"}))
    return ["--dataset", "race", "--data_dir", str(out)]


def _write(path, text):
    path.write_text(text)
    return path


CASES = [  # id, extra args (a callable gets the work folder), exit code, what the line must say, must not say
    ("n_batch_0", ["--n_batch", "0"], 2, "argument --n_batch: expected an integer >= 1, got '0'", None),
    ("n_batch_neg", ["--n_batch", "-4"], 2, "argument --n_batch: expected an integer >= 1, got '-4'", None),
    ("n_batch_eval", ["--n_batch_eval", "-1"], 2, "argument --n_batch_eval: expected an integer >= 1, got '-1'", None),
    ("lr", ["--lr", "-1"], 2, "argument --lr: expected a number >= 0, got '-1'", None),
    ("n_iter", ["--n_iter", "0"], 2, "argument --n_iter: expected an integer >= 1, got '0'", "lower --n_batch"),
    ("n_head", ["--n_head", "3"], 2, "argument --n_head: 3 does not divide --n_embd 32", None),
    ("embd_pdrop", ["--embd_pdrop", "1.5"], 2, "argument --embd_pdrop: expected a number in [0, 1), got '1.5'", None),
    ("n_ctx", ["--n_ctx", "3"], 2, "argument --n_ctx: expected an integer >= 6, got '3'", None),
    ("seed", ["--seed", "-1"], 2, "argument --seed: expected an integer in [0, 4294967295]", None),
    ("device", ["--device", "cuda"], 2, "argument --device: 'cuda' is not available", None),
    ("device_name", ["--device", "gpu0"], 2, "argument --device: expected cpu, cuda or cuda:N, got 'gpu0'", None),
    ("backend", ["--backend", "triton"], 2, "TRITON_INTERPRET=1", None),
    ("analysis", ["--analysis"], 2, "argument --analysis: it reads the predictions on the test split: pass --submit too",
     None),
    ("desc_path", ["--desc", "../elsewhere"], 2, "argument --desc: expected a plain folder name", None),
    ("desc_reuse", ["--no-overwrite"], 2, "argument --desc: 'earlier' already has results (", None),
    ("n_batch_data", ["--n_batch", "1000"], 2, "argument --n_batch: expected at most the 80 training examples, got 1000", None),
    ("non_utf8", _bad_data, 1, ":7: expected UTF-8 text, found byte b'\\xff' at column 1", None),
    ("missing_data", lambda d: ["--data_dir", str(d / "nothing")], 1, rocstories.VAL_FILE, None),
    ("missing_vocab", lambda d: ["--encoder_path", str(d / "no_such_vocab.json")], 1, "no_such_vocab.json", None),
    ("missing_vocab_advice", lambda d: ["--encoder_path", str(d / "no_such_vocab.json")], 1,
     "`python -m gpt1_fast.vocab --data FILES --merges N --out DIR` learns one", None),
    ("bad_vocab", lambda d: ["--encoder_path", str(_write(d / "bad_vocab.json", '{"a</w>": 1,'))], 1,
     "bad_vocab.json", None),
    ("no_checkpoint", lambda d: ["--no-from_scratch", "--model_dir", str(d / "empty")], 1,
     "empty: no model here; expected a model folder", None),
    ("damaged_checkpoint", lambda d: ["--no-from_scratch"] + _damaged_release(d), 1, "params_shapes.json",
     "no pretrained checkpoint"),
    ("model_dir_file", lambda d: ["--no-from_scratch", "--model_dir", str(d / "a_file")], 1,
     "a_file: damaged or not a torch checkpoint", None),
    ("runs_dir_file", lambda d: ["--runs_dir", str(d / "a_file")], 2,
     "argument --runs_dir: expected a folder to write into, got", None),
    ("runs_dir_under_file", lambda d: ["--runs_dir", str(d / "a_file" / "runs")], 2, "a_file is a file, not a folder",
     None),
    ("cache_dir_file", lambda d: ["--cache_dir", str(d / "a_file")], 2, "argument --cache_dir: expected a folder", None),
    ("max_grad_norm_nan", ["--max_grad_norm", "nan"], 2, "argument --max_grad_norm: expected a number >= 0, got 'nan'",
     None),
    ("race_questions_not_a_list", _bad_race, 1, "1.txt: expected lists questions, options and answers of one length, "
     "found int (not a list), 1 and 1", None),
    ("bad_merges", lambda d: ["--bpe_path", str(_write(d / "bad.bpe", "#version\nab\n"))], 1,
     "bad.bpe:2: expected a merge 'a b', found 'ab'", None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_loses_nothing(work, case, capsys, monkeypatch):
    import torch
    from gpt1_fast import train

    name, extra, code, want, not_want = case
    if name == "device" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if name == "backend":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
    (work / "empty").mkdir(exist_ok=True)
    before = snapshot(work / "runs")
    assert "earlier/model/model.safetensors" in before
    extra = extra(work) if callable(extra) else extra
    args = base_args(work) + ["--desc", "earlier", "--overwrite", "--n_batch", "16", "--n_iter", "1"]
    args = strip_negations(args + extra)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.cli(args)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert e.value.code == code, (e.value.code, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], err
    assert "Traceback" not in err + out and out == ""  # nothing printed that looks like a run
    if not_want:
        assert not_want not in lines[0]
    assert snapshot(work / "runs") == before  # nothing written, nothing deleted


def strip_negations(args):
    """`--no-X` in a case removes the base's flag --X (a test-only spelling)."""
    for neg in [a for a in args if a.startswith("--no-") and a != "--no-compile"]:
        flag = "--" + neg[len("--no-"):]
        args = [a for a in args if a not in (neg, flag)]
    return args


def test_n_ctx_cut_is_counted_and_warned(work, capsys):
    from gpt1_fast import train
    from gpt1_fast.pretrained import LazyTextEncoder
    from gpt1_fast.tasks import get_task

    te = LazyTextEncoder(work / "vocab" / "enc.json", work / "vocab" / "merges.bpe")
    vocab = (str(work / "vocab" / "enc.json"), str(work / "vocab" / "merges.bpe"))
    task = get_task("rocstories")
    full = task.load(work / "data", te, vocab, n_ctx=512, n_valid=40, cache_dir=work / "cache")
    assert full.cut[0] == 0
    small = task.load(work / "data", te, vocab, n_ctx=20, n_valid=40, cache_dir=work / "cache")
    kept = sum(int(e.lengths.sum()) for e in small.splits.values())
    total = sum(int(e.lengths.sum()) for e in full.splits.values())
    assert small.cut == (total - kept, total, full.layout.n_ctx) and small.cut[0] > 0
    train.warn_if_cut(small, 20)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: --n_ctx 20 cuts {total - kept} of {total} tokens "
                   f"({100 * (total - kept) / total:.1f} %) from the data; its longest example needs "
                   f"{full.layout.n_ctx} positions"]


def test_run_folder_holds_every_file_and_absolute_paths(work):
    import json

    from gpt1_fast.folder import read_config

    folder = work / "runs" / "earlier"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "log.jsonl", "model", "predictions",
                                                         "submission"]
    assert [p.name for p in (folder / "submission").iterdir()] == ["ROCStories.tsv"]  # test predictions alone
    assert [p.name for p in (folder / "predictions").iterdir()] == ["ROCStories.valid.tsv"]
    cfg = json.loads((folder / "config.json").read_text())
    header = json.loads((folder / "log.jsonl").read_text().splitlines()[0])
    for k in ("data_dir", "encoder_path", "bpe_path", "cache_dir", "runs_dir", "model_dir"):
        assert Path(header[k]).is_absolute() and Path(cfg["args"][k]).is_absolute(), k
    info = read_config(folder / "model")
    assert info.layout.to_dict() == cfg["layout"] and Path(info.options["encoder_path"]).is_absolute()
    assert sorted(p.name for p in (folder / "model").iterdir()) == ["config.json", "merges.txt", "model.safetensors",
                                                                    "vocab.json"]


# ------------------------------------------------------------------------------ train: kills
def _start(work, desc, extra=(), env=None, slow_writes=None):
    """The train command in a subprocess; slow_writes=(seconds, pattern): tests/slow_writes.py slows the
    renames of the files matching pattern."""
    import os
    import subprocess
    import sys

    runner = [sys.executable, "-m"] if slow_writes is None else \
        [sys.executable, str(Path(__file__).parent / "slow_writes.py"), *map(str, slow_writes), "-m"]
    cmd = [*runner, "gpt1_fast.train", *base_args(work), "--desc", desc, "--n_batch", "16", "--submit", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    # A shell without job control starts background jobs (`make test &` in a script) with SIGINT ignored; the
    # child inherits that: Python then installs no KeyboardInterrupt handler. Give the run a terminal's default.
    return subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_default_sigint)


def _default_sigint():
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(proc, text, timeout=240):
    """Read stdout lines until one contains `text`; -> the lines read."""
    import time

    seen, t0 = [], time.time()
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return seen
        assert time.time() - t0 < timeout, seen
    raise AssertionError(f"the run ended before printing {text!r}: {seen}\n{proc.stderr.read()}")


def assert_consistent_or_absent(folder: Path):
    """The run's model folder is absent, or loads whole (its config describes its weights: every shape
    agrees); -> the extra facts it holds (n_updates, score), or None."""
    from gpt1_fast.folder import load_pretrained

    if not (folder / "model" / "config.json").exists():
        return None
    _, info = load_pretrained(folder / "model")
    return info.extra


def _wait_for_stderr(proc, text, count=1, timeout=240):
    """Read stderr lines until `count` of them contained `text`."""
    import time

    seen, t0 = [], time.time()
    for line in proc.stderr:
        seen.append(line)
        if sum(text in x for x in seen) >= count:
            return seen
        assert time.time() - t0 < timeout, seen
    raise AssertionError(f"the run ended before {count} stderr lines with {text!r}: {seen}")


def temporaries(folder: Path):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_ctrl_c_stops_cleanly_naming_the_last_checkpoint(work):
    import signal

    proc = _start(work, "sigint", ["--n_iter", "50"])
    _wait_for(proc, "n_epochs=1 ")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    folder = work / "runs" / "sigint"
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("interrupted at update ") and "no checkpoint to resume from (--save_every N" in lines[0]
    assert f"the best model so far is {folder / 'model'}" in lines[0]
    meta = assert_consistent_or_absent(folder)
    assert meta is not None  # the one named: the initial parameters, or those of an evaluation
    assert (f"update {meta['n_updates']}," if meta["n_updates"] else "(the initial parameters)") in lines[0]
    assert temporaries(folder) == []


@pytest.mark.parametrize("moment", ["during_checkpoint_write", "random"])
def test_sigkill_leaves_a_loadable_checkpoint_or_none(work, moment):
    import random
    import signal
    import time

    from gpt1_fast import train

    desc = f"kill_{moment}"
    folder = work / "runs" / desc
    if moment == "during_checkpoint_write":  # the weights of the first evaluation's model, written, not renamed
        proc = _start(work, desc, ["--n_iter", "3"], slow_writes=(3, r"model/model\.safetensors$"))
        _wait_for(proc, "n_epochs=1 ")  # the initial model was written (slowly) before training began
        old = folder / "model" / "model.safetensors"
        before = old.read_bytes()
        _wait_for_stderr(proc, "slow write: ", count=2)  # replacing it after the first evaluation
    else:
        proc = _start(work, desc, ["--n_iter", "3"])
        time.sleep(random.Random().uniform(1.0, 25.0))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL or moment == "random"
    if folder.exists():
        meta = assert_consistent_or_absent(folder)
        if moment == "during_checkpoint_write":
            assert meta["n_updates"] == 0 and old.read_bytes() == before  # the old model, whole
            assert len(temporaries(folder / "model")) == 1  # the new weights, never renamed
    # A later run in the same folder (--overwrite) leaves no temporaries and a loadable checkpoint.
    train.main(base_args(work) + ["--desc", desc, "--n_batch", "16", "--n_iter", "1", "--submit", "--overwrite"])
    assert temporaries(folder / "model") == [] and assert_consistent_or_absent(folder)["n_updates"] == 5


def test_generate_names_a_damaged_model(work, capsys):
    from gpt1_fast import generate

    good = work / "runs" / "earlier" / "model"
    bad = work / "damaged_model"
    bad.mkdir(exist_ok=True)
    for f in good.iterdir():
        data = f.read_bytes()
        (bad / f.name).write_bytes(data[: len(data) // 2] if f.name == "model.safetensors" else data)
    for path, want in ((bad, f"error: {bad / 'model.safetensors'}"), (work / "nowhere.pt", f"error: {work / 'nowhere.pt'}: not found")):
        with pytest.raises(SystemExit) as e:
            generate.cli(["--model_dir", str(path), "--prompt", "x", "--device", "cpu"])
        err = capsys.readouterr().err
        assert e.value.code == 1 and err.startswith(want) and err.count("\n") == 1, err
    assert generate.main(["--model_dir", str(good), "--prompt", "Anna", "--gen_len", "2", "--device", "cpu"])