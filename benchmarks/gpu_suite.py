"""The GPU run, in priority order and within a time budget: what one device call brings back.

    python benchmarks/gpu_suite.py --budget 480        # from the repository root, on the GPU machine

Steps, most valuable first (`--list` prints them with this budget's timeouts): the environment
(versions, clocks), the CUDA tests that decide whether any number counts (parity of every kernel
with the float64 reference, the whole model's fused training path, the captured step), then the
figures never measured on a GPU (LM head, the whole ROCStories step with its memory, pretraining),
then the rest. The fused-Adam extension builds in the background meanwhile (the steps that need it
wait for it). Each step runs under its own timeout, min(its cap, what is left of the budget less a
reserve for the last archive); a step that no longer fits is skipped ("no time").

What comes back: $OUT (default <work>/out) holds two files, rewritten atomically after every step and
every --archive_every seconds during one: `summary.json` (per step: status, exit code, seconds,
the timeout it had, pytest's counts, the GPU clocks after it) and `gpu_suite.tgz` (the summary,
env.json, every step's full log, pytest's junit XML with per-test times, and the benchmarks' results
files, which the benchmarks rewrite as they go). A run cut short keeps everything up to the cut.

Exit status: 0 when every step that ran succeeded (or was cut short by the end of the budget) and
at least one test passed; 1 when a step failed or ran past its own cap, a test failed, or no test
passed (all skipped: no GPU?); 2 for bad flags; 143 when stopped by SIGTERM (the archive is
written first).

PYTHONPATH is extended (this checkout first, then wheels installed from .whl/, then what was set),
never replaced. `--dry-run` runs the same plan with time scaled by --time_scale and the stand-ins
given by --python/--nvidia_smi (CI: tests/test_gpu_suite.py); each step sees GPU_SUITE_STEP and
GPU_SUITE_ESTIMATE (its scaled estimate) in its environment.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESERVE_S = 10  # kept for the last archive and summary
CLOCK_FIELDS = "clocks.sm,clocks.mem,clocks.max.sm,power.draw,temperature.gpu,pstate"


@dataclass
class Step:
    name: str
    argv: list  # "{python}" stands for the interpreter
    estimate: float  # seconds on an H100 (benchmarks/NOTES.md, "GPU suite": planned, then measured)
    cap: float  # its own timeout at most
    group: str = "priority"  # "priority" | "rest"
    pytest: bool = False
    background: bool = False
    needs: tuple = ()


def _pytest(name, targets, estimate, cap, group="priority", needs=(), marks="cuda"):
    argv = ["{python}", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", "--durations=20",
            f"--junitxml={{work}}/junit/{name}.xml", *(["-m", marks] if marks else []), *targets]
    return Step(name, argv, estimate, cap, group, pytest=True, needs=needs)


def _bench(name, estimate, cap, group="priority", needs=(), *extra):
    return Step(name, ["{python}", "-m", "benchmarks", name, *extra], estimate, cap, group, needs=needs)


def plan(repo: Path = REPO) -> list[Step]:
    """The steps in priority order. The estimates (H100 seconds, cold Triton and Inductor caches) are
    what the priority steps were planned from, about 8 minutes in all; each cap is about twice its
    estimate. Tests marked `priority` (and `cuda`) are the ones that decide whether numbers count."""
    whl = sorted(str(p.relative_to(repo)) for p in (repo / ".whl").glob("*.whl"))
    steps = [Step("env", ["{python}", "-m", "benchmarks", "env"], 10, 60)]
    if whl:
        steps.append(Step("wheels", ["{python}", "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                     "--no-compile", "--target", "{work}/site", *whl], 8, 60))
    steps += [
        Step("build", ["{python}", "-c", "from gpt1_fast import _ext; r = _ext.unavailable_reason('cuda'); "
                       "print(r or 'fused Adam: CUDA kernels ready'); raise SystemExit(1 if r else 0)"],
             90, 300, background=True),
        _pytest("parity", ["tests/test_gpu.py", "tests/test_gpu_model.py"], 100, 200, marks="cuda and priority"),
        _pytest("captured_step", ["tests/test_gpu_step.py"], 30, 90, needs=("build",), marks="cuda and priority"),
        _pytest("adam_cuda", ["tests/test_fused_adam.py", "-k", "fused_cuda"], 15, 60, needs=("build",), marks=""),
        _bench("lm_head", 50, 120),
        _bench("train_step", 150, 240, "priority", ("build",), "--core"),
        _bench("pretrain", 110, 200, "priority", ("build",), "--core"),
        # the rest: every other CUDA test, more rows of the same benchmarks, what was measured before
        _pytest("cuda_rest", ["tests"], 200, 400, "rest", ("build",), marks="cuda and not priority"),
        _pytest("adam_nvcc", ["tests/test_fused_adam.py", "-k", "compile_without_spills"], 40, 120, "rest", marks=""),
        Step("memory_check", ["{python}", "benchmarks/gpu_check_lm_head.py"], 60, 150, "rest", needs=("build",)),
        Step("train_step_all", ["{python}", "-m", "benchmarks", "train_step"], 250, 400, "rest", needs=("build",)),
        _bench("generate", 70, 150, "rest"),
        _bench("attention", 60, 150, "rest"),
        _bench("layernorm_gelu", 40, 120, "rest"),
        _bench("adam", 25, 90, "rest", ("build",)),
    ]
    if (repo / ".gpu_carry").is_dir():  # encoded Story Cloze-like files carried along: the command end to end
        c = ".gpu_carry"
        steps.append(Step("train", ["{python}", "-m", "gpt1_fast.train", "--data_dir", f"{c}/data", "--cache_dir",
                                    f"{c}/cache", "--encoder_path", f"{c}/vocab/encoder_bpe_40000.json", "--bpe_path",
                                    f"{c}/vocab/vocab_40000.bpe", "--from_scratch", "--n_iter", "2", "--submit",
                                    "--analysis", "--runs_dir", "{work}/runs", "--padding", "pow2"],
                          120, 300, "rest", needs=("build",)))
    return steps


def select(steps: list[Step], which: str) -> list[Step]:
    """'all', 'priority', 'rest', or step names separated by commas (the background build is kept
    wherever a chosen step needs it)."""
    if which in ("all", "priority", "rest"):
        chosen = [s for s in steps if which == "all" or s.group == which]
    else:
        names = which.split(",")
        unknown = sorted(set(names) - {s.name for s in steps})
        if unknown:
            raise SystemExit(f"error: argument --steps: unknown step(s) {', '.join(unknown)}; "
                             f"expected some of {', '.join(s.name for s in steps)}")
        chosen = [s for s in steps if s.name in names]
    needed = {n for s in chosen for n in s.needs} | {"env", "wheels"}
    return [s for s in steps if s in chosen or s.name in needed]


@dataclass
class Record:
    name: str
    status: str = "pending"  # ok | failed | timeout (its cap) | cut (the budget) | no time | killed | running
    rc: int | None = None
    seconds: float = 0.0
    timeout: float = 0.0
    estimate: float = 0.0
    waited: float = 0.0
    tests: dict = field(default_factory=dict)
    clocks_after: str | None = None


class Suite:
    """Runs the selected steps within the budget (module docstring)."""

    def __init__(self, args, steps: list[Step]):
        self.args, self.steps = args, steps
        self.scale = args.time_scale
        self.work, self.out = Path(args.work), Path(args.out or Path(args.work) / "out")
        for d in ("logs", "junit", "results", "ext", "site"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.records = {s.name: Record(s.name, estimate=s.estimate * self.scale) for s in steps}
        self.background: dict = {}  # name -> (Popen, log file, start, deadline)
        self.running: list = []
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget * self.scale
        self.archive_writes = 0
        self.last_archive = self.t0
        self.stopped = False
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for d in ("logs", "junit", "results"):  # this run's only (the build and wheels are kept)
            for f in (self.work / d).iterdir():
                f.unlink()

    # ---------------------------------------------------------------------------------- environment
    def env(self, step: Step) -> dict:
        env = dict(os.environ)
        paths = [str(REPO), str(self.work / "site"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env.update(PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)), PYTHONUNBUFFERED="1", TRITON_INTERPRET="0",
                   MPLBACKEND="Agg", GPT1_FAST_RESULTS_DIR=str(self.work / "results"),
                   GPT1_FAST_EXT_DIR=str(self.work / "ext"), GPU_SUITE_STEP=step.name,
                   GPU_SUITE_ESTIMATE=f"{step.estimate * self.scale:.3f}")
        return env

    def argv(self, step: Step) -> list[str]:
        return [a.replace("{python}", self.args.python).replace("{work}", str(self.work)) for a in step.argv]

    def clocks(self) -> str | None:
        try:
            out = subprocess.run([self.args.nvidia_smi, f"--query-gpu={CLOCK_FIELDS}", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            return None

    # -------------------------------------------------------------------------------------- running
    def start(self, step: Step) -> tuple:
        log = open(self.work / "logs" / f"{step.name}.log", "w")
        log.write(f"$ {' '.join(self.argv(step))}\n")
        log.flush()
        proc = subprocess.Popen(self.argv(step), cwd=REPO, env=self.env(step), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.running.append(proc)
        return proc, log

    def left(self) -> float:
        return self.deadline - time.monotonic() - RESERVE_S * self.scale

    def wait(self, proc, deadline: float) -> bool:
        """True when the process ended before `deadline`; archives every --archive_every seconds."""
        poll = min(0.5, max(0.02, self.scale))
        while proc.poll() is None:
            if time.monotonic() >= deadline or self.stopped:
                return False
            if time.monotonic() - self.last_archive >= self.args.archive_every * self.scale:
                self.archive()
            time.sleep(poll)
        return True

    def kill(self, proc) -> None:
        """SIGTERM to the step's process group, SIGKILL after a grace period."""
        for sig, grace in ((signal.SIGTERM, 5 * self.scale + 0.2), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def finish(self, step: Step, proc, log, started: float, ended_in_time: bool) -> None:
        rec = self.records[step.name]
        if not ended_in_time:
            self.kill(proc)
        log.close()
        if proc in self.running:
            self.running.remove(proc)
        rec.rc, rec.seconds = proc.returncode, round(time.monotonic() - started, 2)
        if ended_in_time:
            rec.status = "ok" if proc.returncode == 0 else "failed"
        else:  # past its own cap: it hung; past what the budget left it: cut
            rec.status = "killed" if self.stopped else ("timeout" if rec.timeout >= step.cap * self.scale else "cut")
        if step.pytest:
            rec.tests = junit_counts(self.work / "junit" / f"{step.name}.xml")
            if rec.status == "ok" and rec.tests.get("passed", 0) == 0:
                rec.status = "failed"  # everything skipped or nothing collected is not a pass
        rec.clocks_after = self.clocks()
        print(f"=== {step.name}: {rec.status} (rc {rec.rc}) in {rec.seconds:.1f} s of {rec.timeout:.0f} s"
              + (f"; tests {rec.tests}" if rec.tests else ""), flush=True)
        if rec.status != "ok":
            print(tail(self.work / "logs" / f"{step.name}.log", 12), flush=True)

    def run_step(self, step: Step) -> None:
        rec = self.records[step.name]
        for need in step.needs:
            if need in self.background:
                t = time.monotonic()
                self.join(need)
                rec.waited = round(time.monotonic() - t, 2)
        left = self.left()
        if left < 0.5 * step.estimate * self.scale or self.stopped:
            rec.status = "no time" if not self.stopped else "killed"
            print(f"=== {step.name}: skipped, {max(left, 0):.0f} s left (estimate {step.estimate:.0f} s)", flush=True)
            return
        rec.timeout = round(min(step.cap * self.scale, left), 2)
        rec.status = "running"
        print(f"=== {step.name} ({time.strftime('%H:%M:%S')}, timeout {rec.timeout:.0f} s)", flush=True)
        started = time.monotonic()
        proc, log = self.start(step)
        if step.background:
            self.background[step.name] = (step, proc, log, started, started + rec.timeout)
            return
        self.finish(step, proc, log, started, self.wait(proc, started + rec.timeout))

    def join(self, name: str) -> None:
        step, proc, log, started, deadline = self.background.pop(name)
        self.finish(step, proc, log, started, self.wait(proc, deadline))

    def run(self) -> int:
        self.archive()
        for step in self.steps:
            if self.stopped:
                self.records[step.name].status = "killed"
                continue
            self.run_step(step)
            self.archive()
        for name in list(self.background):
            self.join(name)
        code = self.exit_code()
        self.archive(code)
        return code

    def stop(self, *_):
        self.stopped = True

    def exit_code(self) -> int:
        if self.stopped:
            return 143
        recs = [self.records[s.name] for s in self.steps]
        ran = [r for r in recs if r.status not in ("pending", "no time")]
        tested = [r for r, s in zip(recs, self.steps) if s.pytest and r in ran]
        if not ran or any(r.status not in ("ok", "cut") for r in ran) or (
                tested and not sum(r.tests.get("passed", 0) for r in tested)):
            return 1
        return 0

    # -------------------------------------------------------------------------------------- archive
    def summary(self, code: int | None) -> dict:
        env_log = self.work / "logs" / "env.log"
        environment = None
        if env_log.exists():
            lines = [line for line in env_log.read_text(errors="replace").splitlines() if line.startswith("{")]
            environment = json.loads(lines[-1]) if lines else None
        return {"budget_s": self.args.budget, "time_scale": self.scale, "dry_run": self.args.dry_run,
                "commit": os.environ.get("GPT1_FAST_COMMIT"), "started": self.started_at,
                "elapsed_s": round(time.monotonic() - self.t0, 2), "exit": code,
                "archive_writes": self.archive_writes + 1, "environment": environment,
                "steps": [asdict(self.records[s.name]) for s in self.steps]}

    def archive(self, code: int | None = None) -> None:
        """summary.json into the work folder and $OUT, then the whole archive; each file replaced
        atomically (written beside itself, then renamed)."""
        text = json.dumps(self.summary(code), indent=1) + "\n"
        for folder in (self.work, self.out):
            tmp = folder / ".summary.json.tmp"
            tmp.write_text(text)
            os.replace(tmp, folder / "summary.json")
        tmp = self.out / ".gpu_suite.tgz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            for name in ("summary.json", "logs", "junit", "results"):
                tar.add(self.work / name, arcname=name)
        os.replace(tmp, self.out / "gpu_suite.tgz")
        self.archive_writes += 1
        self.last_archive = time.monotonic()


def junit_counts(path: Path) -> dict:
    """{tests, passed, failed, errors, skipped} from pytest's junit XML ({} if it was never written)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    return {"tests": n["tests"], "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"],
            "failed": n["failures"], "errors": n["errors"], "skipped": n["skipped"]}


def tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in lines[-n:])


def print_plan(steps: list[Step], budget: float, as_json: bool) -> None:
    t, rows = 0.0, []
    for s in steps:
        timeout = min(s.cap, max(budget - RESERVE_S - t, 0))
        rows.append(dict(asdict(s), starts_at=round(t), timeout=round(timeout)))
        if not s.background:
            t += s.estimate
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    for r in rows:
        print(f"{r['name']:>15} {r['group']:>8}  est {r['estimate']:>4.0f} s  cap {r['cap']:>4.0f} s  "
              f"starts ~{r['starts_at']:>4} s  timeout {r['timeout']:>4} s"
              f"{'  (background)' if r['background'] else ''}{'  needs ' + ','.join(r['needs']) if r['needs'] else ''}")
    print(f"priority steps: {sum(s.estimate for s in steps if s.group == 'priority' and not s.background):.0f} s "
          f"estimated, budget {budget:.0f} s")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python benchmarks/gpu_suite.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=480, help="seconds for the whole run (default 480)")
    ap.add_argument("--steps", default="all", help="all (default), priority, rest, or step names joined by commas")
    ap.add_argument("--work", default="/tmp/gpu_suite", help="logs, results and build folder (default /tmp/gpu_suite)")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="where summary.json and gpu_suite.tgz go "
                    "(default $OUT, else <work>/out)")
    ap.add_argument("--archive_every", type=float, default=60, help="seconds between archives during a step")
    ap.add_argument("--python", default=sys.executable, help="the interpreter each step runs (a stand-in in CI)")
    ap.add_argument("--nvidia_smi", default="nvidia-smi", help="nvidia-smi (a stand-in in CI)")
    ap.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                    help="the plan with time scaled by --time_scale (default 0.01), through stand-ins")
    ap.add_argument("--time_scale", type=float, default=None, help="multiply every duration (dry runs)")
    ap.add_argument("--list", action="store_true", help="print the plan with this budget's timeouts, run nothing")
    ap.add_argument("--json", action="store_true", help="with --list: as JSON")
    args = ap.parse_args(argv)
    if args.budget <= 0:
        ap.error(f"argument --budget: expected seconds > 0, got {args.budget}")
    if args.dry_run and (args.python == sys.executable or args.nvidia_smi == "nvidia-smi"):
        ap.error("argument --dry-run: give the stand-ins with --python and --nvidia_smi")
    args.time_scale = args.time_scale if args.time_scale is not None else (0.01 if args.dry_run else 1.0)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    steps = select(plan(), args.steps)
    if args.list:
        print_plan(steps, args.budget, args.json)
        return 0
    suite = Suite(args, steps)
    signal.signal(signal.SIGTERM, suite.stop)
    signal.signal(signal.SIGINT, suite.stop)
    code = suite.run()
    print(f"gpu_suite: exit {code}; {suite.out / 'gpu_suite.tgz'} and summary.json")
    return code


if __name__ == "__main__":
    sys.exit(main())
