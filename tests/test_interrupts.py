"""Ctrl-C anywhere (training, a checkpoint write, encoding the corpus) exits 130 with one line naming
the last complete checkpoint and the command that continues the run; a rerun without --resume is
refused naming --resume first; the printed command does continue it. (train's Ctrl-C without
checkpoints and SIGKILL: tests/test_reliability.py; exact resume: tests/test_resume.py.)"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runs_fixture import base_args, pretrain_args

pytest.importorskip("spacy")
pytest.importorskip("ftfy")
REPO = Path(__file__).resolve().parents[1]


def start(module: str, argv: list[str], slow: tuple[float, str]) -> subprocess.Popen:
    """`python -m module argv` with the atomic writes of files matching slow[1] slowed by slow[0] seconds
    (tests/slow_writes.py prints `slow write: <path>` first), SIGINT as on a terminal."""
    cmd = [sys.executable, str(REPO / "tests" / "slow_writes.py"), str(slow[0]), slow[1], "-m", module, *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def interrupt_at(proc, text: str, count: int = 1, timeout: float = 240) -> list[str]:
    """Send SIGINT once `count` stderr lines held `text`; -> every stderr line of the run."""
    seen, t0 = [], time.time()
    for line in proc.stderr:
        seen.append(line.rstrip("\n"))
        if sum(text in x for x in seen) >= count:
            proc.send_signal(signal.SIGINT)
            break
        assert time.time() - t0 < timeout, seen
    else:
        raise AssertionError(f"the run ended before {count} lines with {text!r}: {seen}")
    rest = proc.communicate(timeout=120)[1]
    return seen + rest.splitlines()


def assert_one_interrupt_line(proc, lines: list[str]) -> str:
    assert proc.returncode == 130, lines
    assert not any("Traceback" in x for x in lines), lines
    assert lines[-1].startswith("interrupted "), lines
    return lines[-1]


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.is_dir() else []


def test_pretrain_ctrl_c_during_a_checkpoint_write(tiny_runs, tmp_path, capsys):
    from gpt1_fast import pretrain

    out = tmp_path / "run"
    argv = [*pretrain_args(tiny_runs, out), "--max_steps", "6", "--save_every", "2"]
    proc = start("gpt1_fast.pretrain", argv, (3, r"step_\d+\.pt$"))
    line = assert_one_interrupt_line(proc, interrupt_at(proc, "slow write: ", count=2))  # step 2 done, step 4 half
    first = out / "checkpoints" / "step_000000002.pt"
    command = shlex.join(["python", "-m", "gpt1_fast.pretrain", *argv, "--resume"])
    assert line == f"interrupted at update 4: the last complete checkpoint is {first}; continue with: {command}"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [first.name]  # the half-written one removed
    with pytest.raises(SystemExit) as e:  # the same command again: refused, --resume named first
        pretrain.cli(argv)
    assert e.value.code == 2 and "(step_000000002.pt): pass --resume to continue it" in capsys.readouterr().err
    assert pretrain.main(shlex.split(command)[3:])["steps"] == 6  # the printed command continues the run


def test_pretrain_ctrl_c_while_encoding_the_corpus(tiny_runs, tmp_path):
    from gpt1_fast import pretrain

    out = tmp_path / "run"
    argv = pretrain_args(tiny_runs, out)
    proc = start("gpt1_fast.pretrain", argv, (3, r"data/train\.bin$"))  # the encoded tokens, about to be published
    line = assert_one_interrupt_line(proc, interrupt_at(proc, "slow write: "))
    assert line == ("interrupted before training started; no checkpoint was written yet: run the command again to "
                    "start over (an encoded corpus is reused)")
    assert temporaries(out / "data") == [] and not (out / "checkpoints").exists()
    assert pretrain.main(argv)["steps"] == 2  # the same command starts over


def test_train_ctrl_c_with_checkpoints_names_the_resume_command(tiny_runs, capsys):
    from gpt1_fast import train

    d = tiny_runs
    argv = [*base_args(d), "--desc", "ctrl_c", "--n_batch", "16", "--n_iter", "2", "--save_every", "2", "--overwrite"]
    proc = start("gpt1_fast.train", argv, (3, r"step_\d+\.pt$"))
    line = assert_one_interrupt_line(proc, interrupt_at(proc, "slow write: ", count=2))
    folder = d / "runs" / "ctrl_c"
    first = folder / "checkpoints" / "step_000000002.pt"
    command = shlex.join(["python", "-m", "gpt1_fast.train", *[a for a in argv if a != "--overwrite"], "--resume"])
    assert line.startswith(f"interrupted at update 4: the last complete checkpoint is {first}; continue with: "
                           f"{command}; the best model so far is {folder / 'model'}"), line
    with pytest.raises(SystemExit) as e:
        train.cli([a for a in argv if a != "--overwrite"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "'ctrl_c' has checkpoints" in err and err.index("--resume") < err.index("--overwrite")
    assert train.main(shlex.split(command)[3:])["n_updates"] == 10  # the printed command continues the run


def test_ctrl_c_inside_torch_save_is_an_interrupt(tmp_path):
    """torch's writer turns an exception of the file's write() into a RuntimeError: atomic_write gives
    the KeyboardInterrupt back (the entry points exit 130) and leaves no temporary."""
    import torch

    from gpt1_fast.fileio import atomic_write

    class Interrupted:
        def __init__(self, f):
            self.f, self.calls = f, 0

        def write(self, b):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return self.f.write(b)

        def flush(self):
            self.f.flush()

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "step_1.pt", lambda f: torch.save({"w": torch.zeros(1000)}, Interrupted(f)), mode="wb")
    assert list(tmp_path.iterdir()) == []
