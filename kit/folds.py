"""Folds, made once per competition and saved: every run of every backbone reads the same file;
and one fold loaded as training, prediction and the bench use it.

StratifiedKFold for binary and multiclass, StratifiedGroupKFold when the spec names a group
column, iterative multilabel stratification for multilabel. Same seed -> byte-identical file.
"""
import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

from kit import KitError, quoted
from kit.cache import Images, Joined, competition_images
from kit.checks import check_backbone
from kit.config import check_fold
from kit.data import Data, load_data
from kit.files import locked, read_csv, write_csv
from kit.members import image_size
from kit.metrics import as_columns, hard_labels
from kit.runs import folds_file


def make_folds(data, n_folds, seed):
    y, groups = data.y, data.groups
    if y.ndim == 2:
        splitter = GroupKFold(n_folds, shuffle=True, random_state=seed) if groups is not None else \
            _multilabel_splitter(n_folds, seed)
    elif groups is not None:
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(y), -1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sklearn's "least populated class": fold_warnings
            for k, (_, val) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
                fold[val] = k
    except ValueError as e:  # fewer images or groups than folds
        raise KitError(f"cannot split into {n_folds} folds: {e}") from None
    return pd.DataFrame({"id": data.train["id"], "fold": fold})


def _rare_classes(data, n_folds):
    y = np.asarray(data.y)
    counts = y.sum(0) if y.ndim == 2 else np.bincount(y.astype(int), minlength=len(data.classes))
    return [f"class {name!r} has {int(count)} images, fewer than the {n_folds} folds: {n_folds - int(count)} "
            f"of them validate on none of it, so their scores say nothing about it"
            for name, count in zip(data.classes, counts) if count < n_folds]


def fold_warnings(spec, data):
    """What would silently waste a run of these folds, one line each."""
    per_fold = len(data.train) - len(data.train) // spec.n_folds
    steps = [f"batch_size {spec.batch_size} is at or above the {per_fold} training images of a fold: one "
             f"step an epoch"] if spec.batch_size >= per_fold else []
    return steps + _rare_classes(data, spec.n_folds)


def _multilabel_splitter(n_folds, seed):
    """Iterative stratification (iterative-stratification): the one place the kit needs it. Kaggle's
    image lacks it; kernels read the folds.csv made here and never get this far."""
    try:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
    except ImportError:
        raise KitError("multilabel folds need iterative-stratification, which this Python lacks: pip install "
                       "iterative-stratification, or make the folds where the kit is installed (make folds) "
                       "and bring runs/<slug>/folds.csv") from None
    return MultilabelStratifiedKFold(n_folds, shuffle=True, random_state=seed)


def load_folds(spec, data):
    """The fold of every training image: runs/<slug>/folds.csv, made on first use."""
    path = folds_file(spec)
    with locked(path.with_suffix(".lock")):  # made once, whichever process gets there first
        if not path.is_file():
            seed = spec.seed if spec.folds_seed is None else spec.folds_seed
            write_csv(path, make_folds(data, spec.n_folds, seed))
    folds = read_csv(path, "folds file")
    if folds["id"].tolist() != data.train["id"].tolist():
        raise KitError(f"{path} was made for other training images: delete it to make new folds "
                       f"(runs made with the old folds no longer compare)")
    fold = folds["fold"].astype(int).to_numpy()
    if data.groups is not None and pd.Series(fold).groupby(data.groups).nunique().max() > 1:
        raise KitError(f"{path} splits groups of {spec.group_column} across folds (made without it?): "
                       f"delete it to make new folds (runs made with the old folds no longer compare)")
    if fold.max() + 1 != spec.n_folds:
        raise KitError(f"{path} holds {fold.max() + 1} folds but n_folds is {spec.n_folds}: "
                       f"delete it to make new folds, or set n_folds={fold.max() + 1}")
    return fold


@dataclass
class Fold:
    """One fold of a competition at one image size."""

    index: int
    task: str
    data: Data
    images: Images  # every training image, by row of data.train (then pseudo-labelled test images)
    test_images: Images  # every test image, by row of data.test
    skipped: dict  # {path: reason}: unreadable training images, in neither split
    train_idx: np.ndarray
    val_idx: np.ndarray  # rows of data.train only: validation never sees a pseudo-label
    labels: np.ndarray  # of every image in `images`, as the kit holds labels

    @property
    def size(self):
        return self.images.size

    @property
    def y(self):
        """The labels of `images`, as the model's loss takes them."""
        return as_columns(self.task, self.labels)


def load_fold(spec, backbone, fold, log=None, data=None, member=None):
    """Fold `fold` at the backbone's image size: labels, images (decoded once into the spec's
    cache: the pass that finds the unreadable ones, left out of training, an error in test),
    and its training and validation rows. `log` hears what is loaded (of `member`) before the
    decoding; `data`: the competition's tables, when already loaded."""
    size = image_size(spec, check_backbone(backbone))
    check_fold(spec, fold)
    data = load_data(spec) if data is None else data
    fold_of = load_folds(spec, data)
    if log:
        log(f"{spec.slug} / {member or backbone} / fold {fold}: {size}px, {len(data.train)} train images, "
            f"{len(data.test)} test images, classes: {quoted(data.classes, 10)}")
    for note in data.notes if log else []:
        log(note)
    if log and data.unlabelled:
        log(f"{len(data.unlabelled)} images in the train files have no label: not used "
            f"(e.g. {data.unlabelled[0]})")
    images, test_images, bad = competition_images(spec, data, size, log)
    usable = ~data.train["path"].isin(list(bad)).to_numpy()
    f = Fold(fold, spec.task, data, images, test_images, bad, np.flatnonzero((fold_of != fold) & usable),
             np.flatnonzero((fold_of == fold) & usable), data.y)
    return _with_pseudo(spec, f, log) if spec.pseudo else f


def _with_pseudo(spec, f, log):
    """The fold's pseudo-labelled test images (kit/pseudo.py) added to its training images."""
    table = read_csv(Path(spec.pseudo), "pseudo-labels")
    table = table[table["fold"].astype(int) == f.index]
    position = pd.Series(range(len(f.data.test)), index=f.data.test["id"])
    unknown = pd.Index(table["id"]).difference(position.index)
    if len(unknown):
        raise KitError(f"{spec.pseudo}: {len(unknown)} pseudo-labelled ids are not test images, e.g. "
                       f"{unknown[0]!r}: make pseudo again")
    values = table[table.columns[2:]].astype(float).to_numpy()  # 0/1 columns as pseudo.py writes them
    rows = position[table["id"]].to_numpy()
    test_labels = np.zeros((len(f.data.test), *f.data.y.shape[1:]), f.data.y.dtype)  # `rows` are read
    test_labels[rows] = hard_labels(spec.task, values[:, 0] if spec.task == "binary" else values, 0.5)
    if log:
        log(f"pseudo-labels: {len(rows)} test images join fold {f.index}'s training images ({spec.pseudo})")
    return dataclasses.replace(f, images=Joined(f.images, f.test_images),
                               train_idx=np.concatenate([f.train_idx, len(f.data.train) + rows]),
                               labels=np.concatenate([f.data.y, test_labels]))
