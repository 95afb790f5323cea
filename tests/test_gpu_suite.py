"""The budgeted GPU suite (benchmarks/gpu_suite.py) in its dry run: the real plan, time scaled down,
`python` and `nvidia-smi` replaced by stand-ins (tests/gpu_suite_standins/) that succeed, fail a
test, skip everything, fail, or hang. Run as a subprocess, as on the GPU machine (tests do not
import benchmarks/)."""
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
STANDINS = ROOT / "tests" / "gpu_suite_standins"
SCALE = 0.02  # 480 s of budget in 9.6 s


def run_suite(tmp_path, *args, fake="", scale=SCALE, wait=True):
    env = dict(os.environ, GPU_SUITE_FAKE=fake, PYTHONPATH="/wheels/liger")
    env.pop("OUT", None)
    cmd = [sys.executable, str(SUITE), "--dry-run", "--python", str(STANDINS / "python"), "--nvidia_smi",
           str(STANDINS / "nvidia-smi"), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
           "--time_scale", str(scale), *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def summary(tmp_path):
    steps = json.loads((tmp_path / "out" / "summary.json").read_text())
    return steps, {s["name"]: s for s in steps["steps"]}


def plan(*args):
    out = subprocess.run([sys.executable, str(SUITE), "--list", "--json", *args], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout)


def test_plan_puts_the_deciding_steps_first_and_fits_them_in_eight_minutes():
    steps = plan()
    names = [s["name"] for s in steps]
    assert names[0] == "env" and names.index("parity") < names.index("lm_head") < names.index("train_step") \
        < names.index("pretrain") < names.index("cuda_rest")
    priority = [s for s in steps if s["group"] == "priority"]
    assert all(s["group"] == "rest" for s in steps[len(priority):])  # the priority steps come first
    assert sum(s["estimate"] for s in priority if not s["background"]) <= 8 * 60
    assert all(s["estimate"] < s["cap"] for s in steps)
    assert {s["name"] for s in plan("--steps", "lm_head")} - {"wheels"} == {"env", "lm_head"}  # wheels: if .whl/
    assert "build" in {s["name"] for s in plan("--steps", "pretrain")}  # what a chosen step needs comes along


def test_plan_test_selections_exist():
    """Every test file a priority pytest step names exists and its selection collects tests (on this
    CPU they are then skipped); the rest's selection is a marker expression over all of tests/."""
    for step in plan():
        if not step["pytest"] or step["group"] != "priority":
            continue
        args = [a for a in step["argv"][3:] if not a.startswith(("--junitxml", "--durations", "-rfEs"))]
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (step["name"], out.stdout[-2000:])
        assert " tests collected" in out.stdout or " test collected" in out.stdout, step["name"]


def test_priority_steps_pass_exit_zero_and_one_archive(tmp_path):
    res = run_suite(tmp_path, "--budget", "480", "--steps", "priority")
    assert res.returncode == 0, res.stdout
    meta, steps = summary(tmp_path)
    priority = [s["name"] for s in plan() if s["group"] == "priority"]
    assert sorted(steps) == sorted(priority) and all(steps[n]["status"] == "ok" for n in priority), steps
    assert all(0 < steps[n]["seconds"] <= steps[n]["timeout"] for n in priority)
    assert steps["parity"]["tests"] == {"tests": 3, "passed": 3, "failed": 0, "errors": 0, "skipped": 0}
    assert steps["lm_head"]["clocks_after"].startswith("1980 MHz")
    assert meta["environment"]["device"] == "stand-in GPU" and meta["exit"] == 0
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["gpu_suite.tgz", "summary.json"]  # at most 8 files come back; no temporaries left
    with tarfile.open(tmp_path / "out" / "gpu_suite.tgz") as tar:
        names = tar.getnames()
        log = tar.extractfile("logs/lm_head.log").read().decode()
    assert {"summary.json", "logs/parity.log", "junit/parity.xml", "results/lm_head-standin.json"} <= set(names)
    # PYTHONPATH extended, not replaced: this checkout, the wheels' folder, then what the caller had
    assert f"PYTHONPATH={ROOT}:{tmp_path / 'work' / 'site'}:/wheels/liger" in log


def test_failed_test_hung_step_and_crash_make_the_exit_non_zero(tmp_path):
    """A failing test, a benchmark that ignores SIGTERM (killed at its cap, its partial result kept,
    the archive rewritten while it hangs) and a crashing step: the later steps still run."""
    res = run_suite(tmp_path, "--steps", "env,parity,lm_head,generate,layernorm_gelu", "--archive_every", "20",
                    fake="parity=fail_test,lm_head=hang_hard,generate=fail")
    assert res.returncode == 1, res.stdout
    meta, steps = summary(tmp_path)
    assert steps["parity"]["status"] == "failed" and steps["parity"]["rc"] == 1
    assert steps["parity"]["tests"]["failed"] == 1
    assert steps["lm_head"]["status"] == "timeout" and steps["lm_head"]["rc"] == -signal.SIGKILL
    assert steps["lm_head"]["timeout"] == pytest.approx(120 * SCALE)  # its cap: the budget had more
    assert steps["generate"]["status"] == "failed" and steps["generate"]["rc"] == 3
    assert steps["layernorm_gelu"]["status"] == "ok"
    assert meta["archive_writes"] >= 5 + 2  # after each step, and during the hang
    with tarfile.open(tmp_path / "out" / "gpu_suite.tgz") as tar:
        assert "results/lm_head-standin.json" in tar.getnames()  # written before it hung


def test_all_tests_skipped_is_not_a_pass(tmp_path):
    res = run_suite(tmp_path, "--steps", "env,parity", fake="parity=all_skipped")
    assert res.returncode == 1, res.stdout
    _, steps = summary(tmp_path)
    assert steps["parity"]["status"] == "failed" and steps["parity"]["rc"] == 0
    assert steps["parity"]["tests"]["skipped"] == 3


def test_budget_gives_each_step_what_is_left(tmp_path):
    """Budget 150 s: env (10) then lm_head (estimate 50, cap 120) hangs until the budget's end less the
    reserve: cut, not a failure; parity (estimate 100) no longer fits; the captured-step tests passed."""
    res = run_suite(tmp_path, "--budget", "150", "--steps", "env,captured_step,lm_head,generate",
                    fake="lm_head=hang")
    _, steps = summary(tmp_path)
    assert steps["lm_head"]["status"] == "cut" and steps["lm_head"]["timeout"] < 120 * SCALE
    assert steps["generate"]["status"] == "no time"
    assert res.returncode == 0, res.stdout


def test_sigterm_archives_and_exits_143(tmp_path):
    proc = run_suite(tmp_path, "--steps", "env,lm_head", fake="lm_head=hang", wait=False)
    log = tmp_path / "work" / "logs" / "lm_head.log"
    t_end = time.monotonic() + 60
    while not (log.exists() and "stand-in lm_head" in log.read_text()) and time.monotonic() < t_end:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    meta, steps = summary(tmp_path)
    assert meta["exit"] == 143 and steps["lm_head"]["status"] == "killed"
