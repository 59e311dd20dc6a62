import sys

import numpy as np
import pandas as pd
import pytest

from kit import KitError
from kit.config import load_spec
from kit.data import Data, load_data
from kit.folds import load_folds, make_folds
from tests.helpers import spec_file, write_competition


def _data(y, groups=None):
    ids = [f"i{k}" for k in range(len(y))]
    return Data(["a", "b", "c"], pd.DataFrame({"id": ids, "path": ids}), np.asarray(y), groups, None)


def test_stratified_folds_keep_class_proportions():
    y = np.array([0] * 60 + [1] * 30 + [2] * 15)
    fold = make_folds(_data(y), 5, seed=1)["fold"].to_numpy()
    for k in range(5):
        assert np.bincount(y[fold == k]).tolist() == [12, 6, 3]


def test_groups_never_split_across_folds():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 20, 200)
    y = rng.integers(0, 2, 200)
    fold = make_folds(_data(y, groups), 4, seed=0)["fold"].to_numpy()
    assert all(len(set(fold[groups == g])) == 1 for g in np.unique(groups))
    assert sorted(set(fold)) == [0, 1, 2, 3]


def test_multilabel_folds_hold_every_label():
    pytest.importorskip("iterstrat", reason="not in Kaggle's image: kernels read the folds.csv made here")
    rng = np.random.default_rng(0)
    y = (rng.random((120, 6)) < [0.5, 0.3, 0.1, 0.08, 0.6, 0.05]).astype(np.float32)
    fold = make_folds(_data(y), 4, seed=0)["fold"].to_numpy()
    per_fold = np.array([y[fold == k].sum(0) for k in range(4)])
    assert (per_fold > 0).all()
    assert np.abs(per_fold - y.sum(0) / 4).max() <= 2


def test_multilabel_folds_without_iterative_stratification_are_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "iterstrat.ml_stratifiers", None)  # as on Kaggle's image: not importable
    y = (np.random.default_rng(0).random((40, 3)) < 0.5).astype(np.float32)
    with pytest.raises(KitError, match="multilabel folds need iterative-stratification, which this Python lacks"):
        make_folds(_data(y), 4, seed=0)


def test_folds_are_made_once_and_identical_for_a_seed(tmp_path):
    write_competition(tmp_path / "data")
    spec = load_spec(str(spec_file(tmp_path)))
    fold = load_folds(spec, load_data(spec))
    first = (spec.runs_path / "folds.csv").read_bytes()
    other = load_spec(str(spec_file(tmp_path)), {"runs_dir": str(tmp_path / "other")})
    assert load_folds(other, load_data(other)).tolist() == fold.tolist()
    assert (other.runs_path / "folds.csv").read_bytes() == first
    reseeded = load_spec(str(spec_file(tmp_path)), {"runs_dir": str(tmp_path / "seed"), "seed": "7"})
    assert load_folds(reseeded, load_data(reseeded)).tolist() != fold.tolist()


def test_saved_folds_that_no_longer_fit_are_an_error_not_silently_remade(tmp_path):
    write_competition(tmp_path / "data")
    spec = load_spec(str(spec_file(tmp_path)))
    load_folds(spec, load_data(spec))
    with pytest.raises(KitError, match="holds 2 folds but n_folds is 3"):
        more = load_spec(str(spec_file(tmp_path)), {"n_folds": "3"})
        load_folds(more, load_data(more))
    train = pd.read_csv(tmp_path / "data" / "train.csv")
    train.assign(patient=[i // 4 for i in range(len(train))]).to_csv(tmp_path / "data" / "train.csv", index=False)
    grouped = load_spec(str(spec_file(tmp_path)), {"group_column": "patient"})
    with pytest.raises(KitError, match="folds.csv splits groups of patient across folds \\(made without it\\?\\)"):
        load_folds(grouped, load_data(grouped))  # made before the groups were named: it would leak
    train.iloc[:-1].to_csv(tmp_path / "data" / "train.csv", index=False)
    with pytest.raises(KitError, match="was made for other training images"):
        load_folds(spec, load_data(spec))


def test_too_few_images_for_the_folds_is_a_clear_error():
    with pytest.raises(KitError, match="cannot split into 5 folds"):
        make_folds(_data(np.array([0, 1, 0, 1])), 5, seed=0)
