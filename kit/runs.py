"""The run folders: the contract between stages. Training writes a run; prediction, CV, the
ensemble, kernels and collect read it; any subset of finished runs can be ensembled later.

    runs/<slug>/
        folds.csv                the fold of every training image, made once (kit/folds.py)
        cache/                   decoded images and outputs kept on disk, shared by every run at one
                                 size (or <cache_dir>/<slug>/: a kernel's is /tmp/kit-cache)
        kernels/                 push-ready kernel bundles (kit/kaggle/bundle.py)
        cv.csv, report.md, report/    the CV table and its figures (kit/report.py)
        <member>/fold<k>/        one run of a member: a backbone, or one of its variants
                                 (<backbone>-seed<N>, -<N>px, -pseudo; kit/runs.Variant)
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
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from kit import KitError
from kit.files import locked, read_csv, write_csv, write_text
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

    def claim(self, wait=False):
        """A lock on the run: True while this process alone may train or replace it; when another
        process has it, False at once, or with `wait` True once it lets go (kit/files.locked)."""
        return locked(self.path / ".lock", wait=wait)

    def log(self, message, screen=True):
        """Print, and keep in log.txt (a resumed run's log goes on)."""
        if screen:
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
        frames = []
        for path, what in ((self.oof, "OOF predictions"), (self.test, "test predictions")):
            frame = read_csv(path, what)
            try:
                frames.append(frame.set_index("id").astype(float))
            except (KeyError, ValueError) as e:
                raise KitError(f"{path}: damaged {what} ({str(e).splitlines()[0][:80]}): make predict "
                               f"predicts them again") from None
            if frame.empty:
                raise KitError(f"{path}: damaged {what} (no rows): make predict predicts them again")
        return tuple(frames)


def test_in_order(test, ids, member, fold):
    """A run's test predictions in the order of `ids` (the test images now), or one line saying
    how to predict them again (a test set changed after training, as a code competition's)."""
    if len(test) != len(ids) or not pd.Index(ids).isin(test.index).all():
        raise KitError(f"{member}/fold{fold} predicted other test images than the data holds now: make "
                       f"predict fold={fold} backbone={member} predicts them again")
    return test.loc[list(ids)]


def _frame(task, classes, ids, p):
    values, names = as_columns(task, p), column_names(task, classes)
    return pd.DataFrame({"id": list(ids), **{c: values[:, k] for k, c in enumerate(names)}})


def probabilities(task, frame):
    """A prediction frame's values as the kit holds probabilities."""
    return from_columns(task, frame.to_numpy(dtype=float))


def run_of(spec, member, fold, root=None):
    """The run folder of one fold of one member (under `root`, a runs/<slug> folder, when given)."""
    return Run(Path(root or spec.runs_path) / member / f"fold{fold}")


@dataclass(frozen=True)
class Variant:
    """A member of the ensemble: a backbone trained with another seed, at another image size, or
    with pseudo-labelled test images (each its own run folders, on the same folds)."""

    backbone: str
    seed: int | None = None  # None: the spec's
    image_size: int | None = None
    pseudo: bool = False

    @property
    def name(self):
        return (self.backbone + (f"-seed{self.seed}" if self.seed is not None else "")
                + (f"-{self.image_size}px" if self.image_size else "") + ("-pseudo" if self.pseudo else ""))


NAME = re.compile(r"(?P<backbone>[^-/\s]+)(?:-seed(?P<seed>\d+))?(?:-(?P<size>\d+)px)?(?P<pseudo>-pseudo)?")


def variant(name):
    """The Variant a member's name (its run folder's) stands for."""
    found = NAME.fullmatch(name)
    if not found:
        raise KitError(f"{name!r} is not a member name: <backbone>[-seed<N>][-<N>px][-pseudo], e.g. "
                       f"vgg16-seed1-384px")
    seed, size = found["seed"], found["size"]
    return Variant(found["backbone"], None if seed is None else int(seed), int(size) if size else None,
                   bool(found["pseudo"]))


def trained_members(spec):
    """Every member with a finished run under the competition's runs folder, named by the spec
    or not (a backbone trained with backbone=... alone)."""
    folders = spec.runs_path.glob("*/fold*") if spec.runs_path.is_dir() else []
    return sorted({f.parent.name for f in folders if Run(f).finished()})


def variants(spec):
    """Every member a spec trains: each backbone at each of its `seeds` and `image_sizes` (when
    listed), and each of those again with pseudo-labels when the spec names some."""
    plain = [Variant(b, seed, size) for b in spec.backbones for seed in spec.seeds or [None]
             for size in spec.image_sizes or [None]]
    return plain + ([Variant(v.backbone, v.seed, v.image_size, True) for v in plain] if spec.pseudo else [])


def folds_file(spec):
    return spec.runs_path / "folds.csv"


def cache_dir(spec):
    return Path(spec.cache_dir) / spec.slug if spec.cache_dir else spec.runs_path / "cache"


def kernels_dir(spec):
    return spec.runs_path / "kernels"


def pseudo_file(spec):
    """Pseudo-labels of confident test images, per fold (kit/pseudo.py)."""
    return spec.runs_path / "pseudo.csv"


def cv_file(spec):
    return spec.runs_path / "cv.csv"


def report_file(spec):
    """report.md; its figures go in the report/ folder beside it."""
    return spec.runs_path / "report.md"
