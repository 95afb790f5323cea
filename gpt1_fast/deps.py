"""The optional packages, written once: what each brings, the pip extra that installs it, and the one
check every entry point makes before it writes anything.

    from gpt1_fast.deps import require
    require("metrics", "scoring the task")   # MissingPackage: "scoring the task needs scikit-learn, ...: pip install ..."

An extra of setup.py installs each group (`pip install --no-build-isolation ".[tasks]"` in a checkout;
`.[all]`: every group). The check finds a package without importing it (spaCy and scikit-learn take a second to
import): a run that needs it imports it later, where it is used.
"""
from __future__ import annotations

import importlib.util
import sys

from .errors import MissingPackage

# group -> (the pip extra, {import name: pip name}); setup.py's extras_require lists the same packages
GROUPS = {
    "text": ("text", {"ftfy": "ftfy", "spacy": "spacy"}),                      # encoding text (TextEncoder)
    "metrics": ("tasks", {"sklearn": "scikit-learn", "scipy": "scipy"}),        # the tasks' scores, the estimators
    "plot": ("plot", {"matplotlib": "matplotlib"}),                            # loss curves, Figure 2
}


def installed(module: str) -> bool:
    """Whether `module` can be imported (a module set to None in sys.modules counts as missing)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(group: str) -> list[str]:
    """The pip names of the group's packages that are not installed."""
    return [pip for module, pip in GROUPS[group][1].items() if not installed(module)]


def message(group: str, why: str) -> str | None:
    """The one line naming what is missing and how to install it, or None when nothing is."""
    absent = missing(group)
    if not absent:
        return None
    extra = GROUPS[group][0]
    return (f"{why} needs {' and '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} not installed: "
            f"pip install {' '.join(absent)} (in a checkout: pip install --no-build-isolation \".[{extra}]\")")


def require(group: str, why: str) -> None:
    """Raise MissingPackage (an ImportError) naming the missing packages of `group` and their extra."""
    msg = message(group, why)
    if msg:
        raise MissingPackage(msg)
