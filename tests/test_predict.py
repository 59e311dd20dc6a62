"""Test-time augmentation, and predicting again with a trained fold."""
import dataclasses

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.augment import Augmenter, serialized
from kit.cache import Images
from kit.predict import predict, views


class _Spec:
    seed, tta, tta_augment = 0, ["hflip", "vflip"], 2


def test_views_are_the_image_its_flips_and_seeded_augmentations():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    found = views(_Spec(), Augmenter(serialized([{"HorizontalFlip": {"p": 1.0}}])))
    assert len(found) == 5 and found[0] is None
    np.testing.assert_array_equal(found[1](image, 0), image[:, ::-1])
    np.testing.assert_array_equal(found[2](image, 0), image[::-1])
    np.testing.assert_array_equal(found[3](image, 7), image[:, ::-1])


def test_tta_averages_the_model_over_the_views(tmp_path):
    """A 'model' that reports the mean of the image's left half: with a horizontal flip added,
    the TTA prediction is the mean of both halves."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    inputs = keras.Input((8, 8, 3))
    left = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, :, :4, :], axis=(1, 2, 3), keepdims=False))(inputs)
    model = keras.Model(inputs, keras.layers.Reshape((1,))(left))
    images = Images(paths, 8)
    plain = predict(model, images, np.arange(5), 2, [None])[:, 0]
    both = predict(model, images, np.arange(5), 2, [None, lambda image, i: image[:, ::-1]])[:, 0]
    pixels = np.stack([np.asarray(Image.open(p), np.float32) for p in paths])
    np.testing.assert_allclose(plain, pixels[:, :, :4].mean((1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(both, pixels.mean((1, 2, 3)), rtol=1e-5)


@pytest.mark.slow
def test_predict_again_with_tta_rewrites_only_the_predictions(tiny):
    from kit.predict import predict_fold
    from kit.train import run_fold

    spec = tiny(schedule=[{"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-2, "patience": 0}])
    out = run_fold(spec, "vgg16", 0)
    before, model_bytes = pd.read_csv(out / "test.csv"), (out / "model.keras").read_bytes()
    predict_fold(tiny(tta=["hflip"], schedule=[
        {"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-2, "patience": 0}]), "vgg16", 0)
    after = pd.read_csv(out / "test.csv")
    assert before["id"].tolist() == after["id"].tolist()
    assert not np.allclose(before[["a", "b"]], after[["a", "b"]])
    assert (out / "model.keras").read_bytes() == model_bytes
    from kit import KitError
    with pytest.raises(KitError, match="fold0 was trained on 32px images, not 48px: predict at its size"):
        predict_fold(dataclasses.replace(spec, image_size=48), "vgg16", 0)
    (out / "model.keras").write_bytes(model_bytes[:-100])  # a copy cut short
    with pytest.raises(KitError, match="model.keras is damaged .*train its fold again"):
        predict_fold(spec, "vgg16", 0)


@pytest.mark.slow
def test_predict_again_with_an_unreadable_test_image_names_it_and_keeps_the_predictions(tiny, tmp_path):
    from kit import KitError
    from kit.predict import predict_fold
    from kit.train import run_fold

    spec = tiny(image_cache="off", schedule=[{"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-2,
                                               "patience": 0}])
    out = run_fold(spec, "vgg16", 0)
    before = (out / "test.csv").read_bytes()
    (tmp_path / "data" / "test" / "te003.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(KitError, match="te003.png"):
        predict_fold(spec, "vgg16", 0)
    assert (out / "test.csv").read_bytes() == before


@pytest.mark.slow
def test_a_fold_without_a_positive_says_once_why_its_roc_auc_is_undefined_and_cv_pools_the_folds(tiny, tmp_path,
                                                                                                  capfd):
    """n_folds above a class's count: a fold validates on none of it. Its ROC AUC is undefined:
    one kit line names the fold and why (no sklearn warning), in the run's log and in make cv,
    whose CV is the OOF predictions pooled (no mean over folds that drops or keeps a NaN)."""
    from kit.data import load_data
    from kit.folds import load_folds
    from kit.report import cv_report
    from kit.train import run_fold

    labels = tmp_path / "data" / "train.csv"
    table = pd.read_csv(labels)
    table["label"] = ["b" if i < 2 else "a" for i in range(len(table))]  # 2 positives, 3 folds
    table.to_csv(labels, index=False)
    spec = tiny(task="binary", metric="roc_auc", n_folds=3,
                schedule=[{"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-2, "patience": 0}])
    data = load_data(spec)
    fold_of = load_folds(spec, data)
    empty = next(k for k in range(3) if not data.y[fold_of == k].any())
    other = next(k for k in range(3) if data.y[fold_of == k].any())
    capfd.readouterr()
    for fold in (empty, other):
        run_fold(spec, "vgg16", fold)
    cv_report(spec)
    out, err = capfd.readouterr()
    line = f"fold {empty}'s validation images hold no 'b': its roc_auc is undefined; CV is the pooled OOF score"
    assert out.count(line) == 2, out  # the run's, and make cv's under its '-'
    assert "UndefinedMetricWarning" not in out + err and "Only one class" not in out + err
    oof = [row for row in out.splitlines() if row.startswith("vgg16 ")][0].split()
    assert oof[1 + sorted((empty, other)).index(empty)] == "-" and float(oof[-1]) >= 0  # the pooled score
