"""The project's error types, written once. Every command-line entry point turns them into one
`error: ...` line on stderr (exit code 2 for a flag, 1 for a file); the estimators raise them as they
are (each is a ValueError, so `except ValueError` catches every one)."""
from __future__ import annotations


class UsageError(ValueError):
    """A flag (or estimator keyword) whose value is wrong, alone or with another flag or the data."""


class DataError(ValueError):
    """A problem with a dataset or corpus file; the message names the file (and line)."""


class CheckpointError(ValueError):
    """A model folder or checkpoint that is missing, damaged, or does not fit the model."""


class ResumeError(ValueError):
    """A resume checkpoint that is missing, damaged, or belongs to another configuration."""


class MissingPackage(ImportError):
    """An optional package that this run needs is not installed; the message names it and the pip extra
    that brings it (gpt1_fast.deps). Command lines: one `error:` line, exit code 1."""
