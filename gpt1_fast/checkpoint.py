"""The fine-tuned models that runs wrote before model folders (gpt1_fast.folder): `best_params.pt`,
the parameters and the configuration that reads them in ONE torch file,
`{"format": "gpt1_fast-model", "version": 1, "config", "state_dict"}`.

Nothing writes this format any more; gpt1_fast.folder reads these files as models (every command
takes one as its model), and converts one to a model folder:
`python -m gpt1_fast.folder runs/<desc>/best_params.pt runs/<desc>/model`. `load_model(path)` reads
one with `torch.load(weights_only=True)` (no pickled code runs) and turns every problem into one
`CheckpointError` that names the file.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import CheckpointError  # one error type for every checkpoint problem

FORMAT = "gpt1_fast-model"
VERSION = 1


def load_model(path, map_location="cpu") -> tuple[dict, dict]:
    """-> (config, state_dict) of a best_params.pt."""
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
                              "of a best_params.pt)")
    if blob.get("version") != VERSION or not isinstance(blob.get("state_dict"), dict) or \
            not isinstance(blob.get("config"), dict):
        raise CheckpointError(f"{path}: unsupported {FORMAT} version {blob.get('version')!r} (this code reads "
                              f"{VERSION})")
    return blob["config"], blob["state_dict"]
