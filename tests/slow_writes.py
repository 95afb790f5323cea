"""Run a module with slow writes of some files, so that a test can kill it in the middle of one:

    python tests/slow_writes.py SECONDS [PATTERN] -m gpt1_fast.pretrain ARGS...

Every atomic write of a file whose path matches PATTERN (a regular expression; default: a resume
checkpoint, checkpoints/step_<N>.pt) sleeps SECONDS after its data is complete and before the rename
that publishes it (gpt1_fast.fileio.atomic_write's os.replace), and prints `slow write: <path>` to
stderr first. The hook lives here, in the tests, not in the package."""
import os
import re
import runpy
import sys
import time

CHECKPOINT = r"step_\d+\.pt$"


def main():
    seconds, *rest = sys.argv[1:]
    pattern = CHECKPOINT if rest[0] == "-m" else rest.pop(0)
    flag, module, *args = rest
    assert flag == "-m", "usage: slow_writes.py SECONDS [PATTERN] -m MODULE ARGS..."
    replace, slow = os.replace, re.compile(pattern)

    def slow_replace(src, dst, *a, **kw):
        if slow.search(str(dst)):
            print(f"slow write: {dst}", file=sys.stderr, flush=True)
            time.sleep(float(seconds))
        return replace(src, dst, *a, **kw)

    os.replace = slow_replace
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
