"""The files of a fine-tuning run, in one place: by default all in its own folder `<runs_dir>/<desc>/`.

    log.jsonl            the options, then one line per evaluation
    config.json          what the run computed with (model, layout, task, vocabulary, options)
    best_params.pt       the parameters of the best validation score, with the configuration that reads them
    checkpoints/         step_<N>.pt for --save_every / --resume
    submission/          the test split(s)' predictions, named as the benchmark's server wants (SST-2.tsv, ...)
    predictions/         the validation split(s)' predictions (<Task>.<split>.tsv)

The seed's --log_dir / --save_dir / --submission_dir move the log, the model files (with the
validation predictions) or the test predictions back to the seed's places (<log_dir>/<desc>.jsonl,
<save_dir>/<desc>/, <submission_dir>/).
"""
from __future__ import annotations

from pathlib import Path

from .fileio import remove_stale_temporaries


class RunPaths:
    def __init__(self, desc: str, runs_dir="runs/", log_dir=None, save_dir=None, submission_dir=None):
        self.desc = desc
        self.run_dir = Path(runs_dir) / desc
        self.log = Path(log_dir) / f"{desc}.jsonl" if log_dir else self.run_dir / "log.jsonl"
        save = Path(save_dir) / desc if save_dir else self.run_dir
        self.config = save / "config.json"
        self.best_params = save / "best_params.pt"
        self.checkpoints = save / "checkpoints"
        self.submission_dir = Path(submission_dir) if submission_dir else self.run_dir / "submission"
        self.predictions_dir = save / "predictions"

    def prediction(self, task, split: str) -> Path:
        """Where a split's predictions go: the test splits' into the submission folder."""
        folder = self.submission_dir if split in task.test_splits else self.predictions_dir
        return folder / task.submission_file(split)

    def outputs(self, task) -> list[Path]:
        """The files this run may write (for `task`): what an earlier run's results would be."""
        preds = [self.prediction(task, s) for s in (*task.eval_splits, *task.test_splits)]
        return [self.log, self.config, self.best_params, *preds]

    def checkpoint_files(self) -> list[Path]:
        return sorted(self.checkpoints.glob("step_*.pt"))

    def earlier_results(self, task) -> list[Path]:
        """Existing outputs, and the resume checkpoints of an earlier run in this folder."""
        return [p for p in self.outputs(task) if p.exists()] + self.checkpoint_files()

    def claim(self, task, overwrite: bool) -> None:
        """Make the folders; remove what a killed run left half-written; with `overwrite`, delete the
        earlier run's files first, so the folders never mix two runs. Call after all validation."""
        for folder in {p.parent for p in self.outputs(task)}:
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(folder)
        if overwrite:
            for p in self.earlier_results(task):
                p.unlink()
