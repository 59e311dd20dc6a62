"""The run folders: the contract between stages. Training writes a run; prediction, CV, the
ensemble, kernels and collect read it; any subset of finished runs can be ensembled later.

    runs/<slug>/
        folds.csv                the fold of every training image, made once (kit/folds.py)
        cache/                   decoded images kept on disk, shared by every run at one size
        kernels/                 push-ready kernel bundles (kit/bundle.py)
        cv.csv, report.md, report/    the CV table and its figures (kit/report.py)
        <backbone>/fold<k>/      one run:
            config.yaml   the resolved spec and this run's settings (backbone, fold, image size)
            history.csv   one line per epoch: epoch, phase, lr, loss, accuracy (Keras'),
                          val_loss, val_accuracy, val_<the competition's metric>
            model.keras   the best weights of the whole schedule; takes raw RGB
            oof.csv       this fold's validation ids, one probability column per output
            test.csv      every test id, same columns; written last: it marks the run finished
            curves.png    loss, accuracy and the metric per epoch, phases marked
            log.txt       what happened; skipped.csv: unreadable training images left out
            checkpoint/   while training: what a killed run resumes from (kit/checkpoint.py)
"""
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from kit.files import read_csv, write_csv, write_text
from kit.metrics import as_columns, column_names, from_columns


@dataclass(frozen=True)
class Run:
    path: Path

    config = property(lambda self: self.path / "config.yaml")
    history = property(lambda self: self.path / "history.csv")
    model = property(lambda self: self.path / "model.keras")
    oof = property(lambda self: self.path / "oof.csv")
    test = property(lambda self: self.path / "test.csv")
    curves = property(lambda self: self.path / "curves.png")
    log_file = property(lambda self: self.path / "log.txt")
    skipped = property(lambda self: self.path / "skipped.csv")
    checkpoint = property(lambda self: self.path / "checkpoint")

    def finished(self):
        return self.test.is_file() and self.oof.is_file()

    def log(self, message):
        """Print, and keep in log.txt (a resumed run's log goes on)."""
        print(message, flush=True)
        with open(self.log_file, "a") as f:
            f.write(message + "\n")

    def write_predictions(self, task, classes, oof_ids, oof, test_ids, test):
        """oof.csv, then test.csv: written last, it marks the run finished."""
        write_csv(self.oof, _frame(task, classes, oof_ids, oof))
        write_csv(self.test, _frame(task, classes, test_ids, test))

    def record(self, **settings):
        """Settings that made the files in the folder, into config.yaml (e.g. the TTA of a
        prediction made again with other views)."""
        config = yaml.safe_load(self.config.read_text()) if self.config.is_file() else {}
        write_text(self.config, yaml.safe_dump({**config, **settings}, sort_keys=False))

    def predictions(self):
        """(oof, test): frames of probability columns indexed by id."""
        return tuple(read_csv(path, what).set_index("id").astype(float)
                     for path, what in ((self.oof, "OOF predictions"), (self.test, "test predictions")))


def _frame(task, classes, ids, p):
    values, names = as_columns(task, p), column_names(task, classes)
    return pd.DataFrame({"id": list(ids), **{c: values[:, k] for k, c in enumerate(names)}})


def probabilities(task, frame):
    """A prediction frame's values as the kit holds probabilities."""
    return from_columns(task, frame.to_numpy(dtype=float))


def run_of(spec, backbone, fold, root=None):
    """The run folder of one fold of one backbone (under `root`, a runs/<slug> folder, when given)."""
    return Run(Path(root or spec.runs_path) / backbone / f"fold{fold}")


def folds_file(spec):
    return spec.runs_path / "folds.csv"


def cache_dir(spec):
    return spec.runs_path / "cache"


def kernels_dir(spec):
    return spec.runs_path / "kernels"


def cv_file(spec):
    return spec.runs_path / "cv.csv"


def report_file(spec):
    """report.md; its figures go in the report/ folder beside it."""
    return spec.runs_path / "report.md"
