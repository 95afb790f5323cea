"""`python -m benchmarks cpu --quick` runs as a user runs it: every part's rows, ours against HF."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quick_cpu_benchmark_writes_every_part(tmp_path):
    pytest.importorskip("transformers")
    env = dict(os.environ, GPT1_FAST_RESULTS_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    env.pop("TRITON_INTERPRET", None)  # nothing Triton here; compile as a user's run does
    out = subprocess.run([sys.executable, "-m", "benchmarks", "cpu", "--quick"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    res = json.loads(next(tmp_path.glob("cpu-quick-*.json")).read_text())
    cases = {(r["case"], r["impl"]): r for r in res["rows"]}
    for case, impls in (("inference: classification forward", ("ours: fp32 eager", "HF transformers fp32")),
                        ("fine-tuning step", ("ours: fp32 eager", "ours: bf16 eager", "HF transformers fp32")),
                        ("generate greedy", ("ours: fp32", "ours: bf16", "HF transformers fp32"))):
        for impl in impls:
            assert (case, impl) in cases, (case, impl, sorted(cases))
    assert cases[("inference: classification forward", "ours: fp32 eager")]["max_abs_diff"] == 0
    assert cases[("generate greedy", "ours: bf16")]["rows_equal_to_ours_fp32"].split("/")[1] == "2"
    assert res["ceilings"]["threads"] >= 1 and "bf16_flags" in res["ceilings"]
