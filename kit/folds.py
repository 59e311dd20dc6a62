"""Folds, made once per competition and saved: every run of every backbone reads the same file.

StratifiedKFold for binary and multiclass, StratifiedGroupKFold when the spec names a group
column, iterative multilabel stratification for multilabel. Same seed -> byte-identical file.
"""
import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

from kit import KitError
from kit.data import read_csv
from kit.files import write_csv


def make_folds(data, n_folds, seed):
    y, groups = data.y, data.groups
    if y.ndim == 2:
        splitter = GroupKFold(n_folds, shuffle=True, random_state=seed) if groups is not None else \
            MultilabelStratifiedKFold(n_folds, shuffle=True, random_state=seed)
    elif groups is not None:
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(y), -1)
    try:
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
            fold[val] = k
    except ValueError as e:  # fewer images or groups than folds
        raise KitError(f"cannot split into {n_folds} folds: {e}") from None
    return pd.DataFrame({"id": data.train["id"], "fold": fold})


def load_folds(spec, data):
    """The fold of every training image: runs/<slug>/folds.csv, made on first use."""
    path = spec.runs_path / "folds.csv"
    if not path.is_file():
        write_csv(path, make_folds(data, spec.n_folds, spec.seed))
    folds = read_csv(path, "folds file")
    if folds["id"].tolist() != data.train["id"].tolist():
        raise KitError(f"{path} was made for other training images: delete it to make new folds "
                       f"(runs made with the old folds no longer compare)")
    fold = folds["fold"].astype(int).to_numpy()
    if fold.max() + 1 != spec.n_folds:
        raise KitError(f"{path} holds {fold.max() + 1} folds but n_folds is {spec.n_folds}: "
                       f"delete it to make new folds, or set n_folds={fold.max() + 1}")
    return fold
