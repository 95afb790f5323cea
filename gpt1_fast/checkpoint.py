"""A fine-tuned model on disk as runs wrote it before model folders (gpt1_fast.folder): its
parameters and the configuration that reads them, in ONE file, `best_params.pt`.

`save_model(path, state_dict, config)` writes `{"format", "version", "config", "state_dict"}` with
`torch.save` through `fileio.atomic_write`, so a reader (generate.py, --analysis) never sees new
parameters with an old configuration or half a file: after a kill at any moment the path holds the
previous complete checkpoint or the new one. `load_model(path)` reads it with
`torch.load(weights_only=True)` (no pickled code runs) and turns every problem into one
`CheckpointError` that names the file. Paths inside `config` are stored absolute.
gpt1_fast.folder reads these files as models too, and converts one to a model folder:
`python -m gpt1_fast.folder runs/<desc>/best_params.pt runs/<desc>/model`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .fileio import atomic_write
from .errors import CheckpointError  # one error type for every checkpoint problem

FORMAT = "gpt1_fast-model"
VERSION = 1
# Tests only: seconds to sleep with the complete data in the temporary file, before the rename that
# replaces an existing checkpoint.
TEST_PAUSE_ENV = "GPT1_FAST_TEST_PAUSE_IN_MODEL_WRITE"


def save_model(path, state_dict: dict, config: dict) -> Path:
    sd = {k: v.detach().to("cpu") for k, v in state_dict.items()}
    blob = {"format": FORMAT, "version": VERSION, "config": config, "state_dict": sd}

    replacing = Path(path).exists()

    def write(f):
        torch.save(blob, f)
        pause = float(os.environ.get(TEST_PAUSE_ENV, "0") or 0)
        if pause > 0 and replacing:  # the case where the previous checkpoint must survive a kill
            f.flush()
            print(f"checkpoint: pausing {pause}s inside the write of {path}", flush=True)
            time.sleep(pause)

    return atomic_write(path, write, mode="wb")


def load_model(path, map_location="cpu") -> tuple[dict, dict]:
    """-> (config, state_dict) of a file written by save_model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, flipped bytes, not a torch file at all
        raise CheckpointError(f"{path}: damaged or not a torch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return check_blob(path, blob)


def check_blob(path, blob) -> tuple[dict, dict]:
    """(config, state_dict) of a loaded best_params.pt, its format and version checked."""
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gpt1_fast model checkpoint (expected the format {FORMAT!r} "
                              "written by `python -m gpt1_fast.train --submit`)")
    if blob.get("version") != VERSION or not isinstance(blob.get("state_dict"), dict) or \
            not isinstance(blob.get("config"), dict):
        raise CheckpointError(f"{path}: unsupported {FORMAT} version {blob.get('version')!r} (this code reads "
                              f"{VERSION})")
    return blob["config"], blob["state_dict"]
