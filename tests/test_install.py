"""A non-editable install (`pip install .` = build a wheel, install it) into a fresh virtual environment
finds the fused OpenAI-Adam op on the CPU.

Cheap by construction: the wheel is built by this interpreter's pip from a copy of the tracked files
(no download, `--no-build-isolation`), installed with `--no-deps` into a bare venv, and the venv reaches
the torch that is already installed here through a `.pth` line added after the install (so pip never
sees, nor touches, this environment's packages). One C++ compile per case (~30-60 s on 2 cores).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                 reason="needs a C++ compiler")]


def _copy_sources(dst: Path) -> Path:
    """The files a clone has (tracked + untracked-not-ignored), without this checkout's build outputs."""
    try:
        names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                               check=True, capture_output=True, text=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell sources from build outputs")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file() and not name.startswith(("tests/", "benchmarks/")):
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    return dst


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "GPT1_FAST_"))}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


# The installed package must come from the venv, build its op from its own files if it has to,
# and the op must run: a fused=True step fails loudly when the extension is unavailable.
PROBE = textwrap.dedent("""
    import sys, torch, gpt1_fast, gpt1_fast._ext as ext
    from gpt1_fast.opt import OpenAIAdam
    assert gpt1_fast.__file__.startswith(sys.prefix), (gpt1_fast.__file__, sys.prefix)
    reason = ext.unavailable_reason("cpu") or ext.unavailable_reason("cpu", "cpu_decode_blocks")
    assert reason is None, reason
    p = torch.nn.Parameter(torch.ones(4)); p.grad = torch.full((4,), 0.5)
    OpenAIAdam([p], lr=0.1, schedule="warmup_constant", warmup=0, t_total=10, fused=True).step()
    assert p.detach().lt(1).all(), p
    import importlib.util
    print("C:", importlib.util.find_spec("gpt1_fast._C") is not None)
    print("CSRC:", ext.CSRC)
""")


@pytest.mark.parametrize("how", ["wheel_has_C", "jit_from_shipped_sources"])
def test_non_editable_install_finds_the_fused_op(tmp_path, how):
    src = _copy_sources(tmp_path / "src")
    build_env = _clean_env(**({"GPT1_FAST_NO_EXT": "1"} if how == "jit_from_shipped_sources" else {}))
    r = _run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index",
              "-w", str(tmp_path / "dist"), str(src)], env=build_env, cwd=tmp_path)
    if how == "jit_from_shipped_sources":  # the skipped build says so, and how it will be built instead
        assert "GPT1_FAST_NO_EXT is set: not building gpt1_fast._C now" in r.stdout + r.stderr
    wheel, = (tmp_path / "dist").glob("gpt1_fast-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    vpy = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "-q", "--no-deps", "--no-index", str(wheel)],
         env=_clean_env())
    site = Path(_run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # torch, numpy, tqdm, ninja from here: a plain path line (this env's own .pth files, the editable
    # gpt1_fast among them, are not processed for it), after the venv's own site-packages.
    (site / "zz_reuse_host_packages.pth").write_text(str(Path(torch.__file__).parent.parent) + "\n")
    env = _clean_env(GPT1_FAST_EXT_DIR=str(tmp_path / "ext"),
                     PATH=f"{sysconfig.get_paths()['scripts']}{os.pathsep}{os.environ.get('PATH', '')}")  # ninja
    r = _run([str(vpy), "-c", PROBE], env=env, cwd=tmp_path)
    assert f"CSRC: {site / 'gpt1_fast' / 'csrc'}" in r.stdout, r.stdout
    if how == "wheel_has_C":
        assert "C: True" in r.stdout and "just in time" not in r.stderr, r.stdout + r.stderr
    else:
        assert "C: False" in r.stdout and "just in time" in r.stderr, r.stdout + r.stderr
