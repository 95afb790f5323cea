"""benchmarks/common.py's record of what was measured: the commit is "-dirty" only when code differs."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402


def _fake_git(status: str):
    def run(cmd, **kw):
        out = "abc123\n" if cmd[:2] == ["git", "rev-parse"] else status
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")
    return run


def test_a_rewritten_results_file_leaves_the_commit_clean_and_code_does_not(monkeypatch):
    monkeypatch.setattr(common.subprocess, "run", _fake_git(" M benchmarks/results/cpu-x.json\n"
                                                             " M benchmarks/results/cpu-x.md\n"))
    assert common.git_commit() == "abc123"
    monkeypatch.setattr(common.subprocess, "run", _fake_git(" M benchmarks/results/cpu-x.json\n M gpt1_fast/ops.py\n"))
    assert common.git_commit() == "abc123-dirty"
    monkeypatch.setattr(common.subprocess, "run", _fake_git(""))
    assert common.git_commit() == "abc123"
