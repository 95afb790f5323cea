"""Run a module with slow checkpoint writes, so that a test can kill it in the middle of one:

    python tests/slow_writes.py SECONDS -m gpt1_fast.pretrain ARGS...

Every atomic write of a resume checkpoint (checkpoints/step_<N>.pt) sleeps SECONDS after its data is
complete and before the rename that publishes it (gpt1_fast.fileio.atomic_write's os.replace). The
hook lives here, in the tests, not in the package."""
import os
import re
import runpy
import sys
import time

CHECKPOINT = re.compile(r"step_\d+\.pt$")


def main():
    seconds, flag, module, *args = sys.argv[1:]
    assert flag == "-m", "usage: slow_writes.py SECONDS -m MODULE ARGS..."
    replace = os.replace

    def slow_replace(src, dst, *a, **kw):
        if CHECKPOINT.search(str(dst)):
            time.sleep(float(seconds))
        return replace(src, dst, *a, **kw)

    os.replace = slow_replace
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
