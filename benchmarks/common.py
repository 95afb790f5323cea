"""Shared benchmark plumbing: timing, device ceilings, results files (../shared/BENCHMARKS.md).

Each benchmark module exposes `main(quick: bool)`, builds a list of row dicts with `row(...)`,
and calls `write_results(name, rows, ceilings)`.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

import torch

from gpt1_fast.fileio import atomic_write_text

# benchmarks/results/ unless GPT1_FAST_RESULTS_DIR says otherwise (the GPU suite collects a run's
# results in its own folder; tests keep theirs in a temporary one)
RESULTS_DIR = Path(os.environ.get("GPT1_FAST_RESULTS_DIR") or Path(__file__).resolve().parent / "results")
CLOCK_FIELDS = ("clocks.sm", "clocks.mem", "clocks.max.sm", "power.draw", "temperature.gpu", "pstate")


def triton_version() -> str | None:
    try:
        import triton

        return triton.__version__
    except Exception:
        return None


def package_version(name: str) -> str | None:
    """An installed distribution's version, without importing it (None: not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    """What a GPU number depends on besides the code: the libraries under it."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": cudnn, "triton": triton_version(), "transformers": package_version("transformers"),
            "liger_kernel": package_version("liger-kernel")}


def gpu_clocks() -> dict | None:
    """The GPU's clocks, power and temperature now, read by nvidia-smi (None without one)."""
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(CLOCK_FIELDS)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return dict(zip(CLOCK_FIELDS, (v.strip() for v in out.stdout.splitlines()[0].split(","))))


def environment(device: torch.device | None = None) -> dict:
    """Versions, the device, its clocks and the commit: recorded with every result."""
    device = device or default_device()
    env = {"device": device_name(device), **versions(), "commit": git_commit(), "clocks": gpu_clocks()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2**30, 1))
    return env


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def device_slug(device: torch.device) -> str:
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def git_commit() -> str | None:
    """The checkout's commit (+ "-dirty" when a tracked file other than a result differs from it: a
    benchmark rewriting its own results file as each part ends leaves the code it measured clean);
    where the tree was copied without .git (the GPU machine), the GPT1_FAST_COMMIT variable the caller
    passes along."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=here, timeout=10)
        if out.returncode == 0:
            commit = out.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, cwd=here, timeout=10).stdout.splitlines()
            dirty = [line for line in status if not line[3:].startswith("benchmarks/results/")]  # root-relative
            return f"{commit}-dirty" if dirty else commit
    except Exception:
        pass
    return os.environ.get("GPT1_FAST_COMMIT")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bench(fn, device: torch.device, *, warmup_ms: float = 25, rep_ms: float = 100, min_runs: int = 5) -> float:
    """Median milliseconds of `fn()`. CUDA: triton.testing.do_bench (CUDA events, L2 flushed between
    runs); CPU: time.perf_counter around each call, median of >= min_runs after one warm-up call."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    fn()
    times = []
    t_end = time.perf_counter() + rep_ms / 1e3
    while len(times) < min_runs or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 200:
            break
    return statistics.median(times)


def measure_ceilings(device: torch.device, quick: bool = False) -> dict:
    """Measured copy bandwidth (bytes read + written) and bf16 matmul rate (fp32 on CPU)."""
    # 4M fp32 elements for --quick; else 256M on a GPU, and 32M on the CPU: 128 MiB, past its last-level
    # cache (4M fit in a 32 MiB L3 and read twice DRAM's rate)
    n = (1 << 22) if quick else (1 << 25) if device.type == "cpu" else (1 << 28)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src), device)
    copy_gbps = 2 * src.numel() * src.element_size() / ms / 1e6
    m = 512 if (quick or device.type == "cpu") else 8192
    dt = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(m, m, device=device, dtype=dt)
    b = torch.randn(m, m, device=device, dtype=dt)
    ms = bench(lambda: a @ b, device)
    matmul_tflops = 2 * m**3 / ms / 1e9
    del src, dst, a, b
    return {"copy_gbps": round(copy_gbps, 1), "matmul_tflops": round(matmul_tflops, 2),
            "matmul_dtype": str(dt).replace("torch.", "")}


def row(case: str, shape, dtype, impl: str, ms: float, *, nbytes: float | None = None,
        flops: float | None = None, ceilings: dict | None = None, baseline: str | None = None,
        baseline_ms: float | None = None, **extra) -> dict:
    """One results row. Give `nbytes` for memory-bound ops (-> gbps) or `flops` (-> tflops)."""
    r = {"case": case, "shape": list(shape) if not isinstance(shape, str) else shape,
         "dtype": str(dtype).replace("torch.", ""), "impl": impl, "ms": round(ms, 5)}
    if nbytes is not None:
        r["gbps"] = round(nbytes / ms / 1e6, 1)
        if ceilings:
            r["fraction_of_ceiling"] = round(r["gbps"] / ceilings["copy_gbps"], 3)
    if flops is not None:
        r["tflops"] = round(flops / ms / 1e9, 2)
        if ceilings:
            r["fraction_of_ceiling"] = round(r["tflops"] / ceilings["matmul_tflops"], 3)
    if baseline is not None and baseline_ms:
        r["baseline"] = baseline
        r["ratio"] = round(ms / baseline_ms, 3)
    r.update(extra)
    return r


def write_results(name: str, rows: list[dict], ceilings: dict, device: torch.device, notes: str = "") -> Path:
    """Write benchmarks/results/<name>-<device-slug>.json and the .md table beside it; print the table."""
    env = environment(device)
    meta = {
        "bench": name,
        "device": env.pop("device"),
        "torch": env["torch"],
        "triton": env["triton"],
        "cuda": env["cuda"],
        "commit": env.pop("commit"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "ceilings": ceilings,
        "environment": env,
    }
    if device.type == "cpu":
        notes = ("CPU results: for development only, not a performance claim. " + notes).strip()
    if notes:
        meta["notes"] = notes
    out = {**meta, "rows": rows}
    path = RESULTS_DIR / f"{name}-{device_slug(device)}.json"
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")
    md = markdown_table(out)
    atomic_write_text(path.with_suffix(".md"), md)
    print(md)
    print(f"wrote {path} and {path.with_suffix('.md').name}")
    return path


_STANDARD_KEYS = ("case", "shape", "dtype", "impl", "ms", "gbps", "tflops", "fraction_of_ceiling", "baseline", "ratio")


def markdown_table(out: dict) -> str:
    lines = [f"# {out['bench']} on {out['device']}", "",
             f"torch {out['torch']}, triton {out['triton']}, cuda {out['cuda']}, commit {out['commit']}, {out['date']}",
             f"environment: {json.dumps(out.get('environment', {}))}",
             f"ceilings: copy {out['ceilings'].get('copy_gbps')} GB/s, matmul {out['ceilings'].get('matmul_tflops')} TFLOP/s",
             ""]
    if out.get("notes"):
        lines += [out["notes"], ""]
    lines += ["| case | shape | dtype | impl | ms | GB/s or TFLOP/s | of ceiling | vs | ratio | more |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        rate = f"{r['gbps']} GB/s" if "gbps" in r else (f"{r['tflops']} TFLOP/s" if "tflops" in r else "")
        more = ", ".join(f"{k} {v}" for k, v in r.items() if k not in _STANDARD_KEYS)
        lines.append(f"| {r['case']} | {r['shape']} | {r['dtype']} | {r['impl']} | {r['ms']:.4f} | {rate} | "
                     f"{r.get('fraction_of_ceiling', '')} | {r.get('baseline', '')} | {r.get('ratio', '')} | {more} |")
    return "\n".join(lines) + "\n"


def interleaved(fns: dict, device: torch.device, rounds: int = 5, on_round=None, **bench_kw) -> dict[str, list]:
    """{name: [ms of each round]}: every round times each implementation once with `bench`, in an
    order rotated by one per round, so that drift (clocks, temperature, other load) falls on all of
    them alike. `on_round({name: median so far})` runs after each round (results written as they
    come survive a run cut short). An implementation that raises is dropped with a line saying why."""
    times: dict = {k: [] for k in fns}
    for r in range(rounds):
        names = [k for k in fns if k in times]
        for k in names[r % max(len(names), 1):] + names[:r % max(len(names), 1)]:
            try:
                times[k].append(bench(fns[k], device, **bench_kw))
            except Exception as e:  # noqa: BLE001 - a baseline that breaks is reported, not fatal
                print(f"{k}: dropped in round {r + 1} ({type(e).__name__}: {str(e)[:300]})", flush=True)
                del times[k]
        if on_round is not None:
            on_round({k: statistics.median(v) for k, v in times.items() if v})
    return times


def medians(times: dict) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in times.items() if v}


def prepare_steps(specs, batches: dict, device: torch.device, warmup_passes: int = 3):
    """Training-step benchmarks: build every implementation of `specs` [(name, make() -> step, batches key,
    the row whose memory base it shares or None)], warm it up on its batches (compilation, CUDA graphs
    per shape, optimizer state) and read its peak memory on CUDA: max_memory_allocated during one
    step minus what was allocated before it was built. Returns ({name: run() -> one step on the next
    of its batches}, {name: peak GiB}); one that fails is reported and left out."""
    runs, peaks, bases = {}, {}, {}
    cuda = device.type == "cuda"
    for name, make, kind, shares in specs:
        try:
            bases[name] = bases[shares] if shares else (torch.cuda.memory_allocated() if cuda else 0)
            step, data = make(), batches[kind]
            for b in data * warmup_passes:
                step(*b)
            it = itertools.cycle(data)
            runs[name] = (lambda step, it: lambda: step(*next(it)))(step, it)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                runs[name]()
                peaks[name] = (torch.cuda.max_memory_allocated() - bases[name]) / 2**30
        except Exception as e:  # noqa: BLE001 - a baseline that cannot run here is reported, not fatal
            print(f"{name}: skipped ({type(e).__name__}: {str(e)[:300]})", flush=True)
    return runs, peaks
