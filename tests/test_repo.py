"""The checkout itself: no merge-conflict markers left in any tracked text file (one slipped into
benchmarks/NOTES.md once, through a merge of parallel branches)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^(<{7} |={7}$|>{7} )", re.M)


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True,
                             text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / n for n in out.split("\0") if n]


def conflict_lines(text: str) -> list[int]:
    return [text.count("\n", 0, m.start()) + 1 for m in MARKER.finditer(text)]


def test_marker_pattern_finds_a_planted_conflict():
    planted = "a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> main\n"
    assert conflict_lines(planted) == [2, 4, 6]
    assert conflict_lines("a\n======= not a marker\n# ======\n") == []


def test_no_conflict_markers_in_tracked_files():
    found = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary, or deleted in the work tree
        found += [f"{path.relative_to(ROOT)}:{line}" for line in conflict_lines(text)]
    assert not found, "merge-conflict markers at " + ", ".join(found)
