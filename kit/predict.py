"""Predictions of a trained fold: OOF for its validation images, test for every test image,
each averaged over the spec's test-time views (the image, flips, seeded augmentations)."""
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd

from kit import KitError
from kit.augment import Augmenter, serialized
from kit.cache import competition_images
from kit.config import check_backbone, check_fold, image_size
from kit.data import load_data
from kit.files import write_csv
from kit.folds import load_folds
from kit.inputs import eval_batches
from kit.metrics import spec_score

TTA_EPOCH = 2**31  # augmented test-time copies use epochs from here: no training run gets there


def split(data, fold_of, fold, bad):
    """(train, validation) indices of `fold`, unreadable images left out."""
    usable = ~data.train["path"].isin(list(bad)).to_numpy()
    return np.flatnonzero((fold_of != fold) & usable), np.flatnonzero((fold_of == fold) & usable)


def views(spec, augment):
    """Test-time views: the image itself, the spec's flips, `tta_augment` seeded augmentations
    by the training pipeline (as in epochs no training run reaches)."""
    found = [None]
    if "hflip" in spec.tta:
        found.append(lambda image, i: image[:, ::-1])
    if "vflip" in spec.tta:
        found.append(lambda image, i: image[::-1])
    for k in range(spec.tta_augment):
        found.append(lambda image, i, k=k: augment(image, spec.seed, TTA_EPOCH + k, i))
    return found


def predict(model, images, indices, batch, views, workers=0):
    """Mean probabilities over the views."""
    runs = [model.predict(eval_batches(images, indices, batch, workers=workers, view=v), verbose=0)
            for v in views]
    return np.mean(runs, axis=0)


def write_predictions(spec, model, fold, batch, augment, out):
    """oof.csv then test.csv (last: it marks the fold finished). Returns the fold's OOF score.
    `fold`: data, images, test_images and val_idx of the fold (train._prepare)."""
    seen, data, val_idx = views(spec, augment), fold.data, fold.val_idx
    oof = predict(model, fold.images, val_idx, batch, seen, spec.workers)
    test = predict(model, fold.test_images, np.arange(len(data.test)), batch, seen, spec.workers)
    columns = data.classes[1:] if spec.task == "binary" else data.classes
    write_csv(out / "oof.csv", _frame(data.train["id"].to_numpy()[val_idx], oof, columns))
    write_csv(out / "test.csv", _frame(data.test["id"], test, columns))
    return spec_score(spec, data.y[val_idx], oof[:, 0] if spec.task == "binary" else oof)


def _frame(ids, probabilities, columns):
    return pd.DataFrame({"id": list(ids), **{c: probabilities[:, k] for k, c in enumerate(columns)}})


def predict_fold(spec, backbone, fold):
    """Predict again with a trained fold's saved model (e.g. after changing the TTA)."""
    entry = check_backbone(backbone)
    check_fold(spec, fold)
    out = spec.run_dir(backbone, fold)
    if not (out / "model.keras").is_file():
        raise KitError(f"no trained model at {out / 'model.keras'}: train the fold first")
    import kit.model  # noqa: F401  (registers the kit's layers for loading)

    model = keras.saving.load_model(out / "model.keras")
    data = load_data(spec)
    train_images, test_images, bad = competition_images(spec, data, image_size(spec, entry))
    _, val_idx = split(data, load_folds(spec, data), fold, bad)
    images = SimpleNamespace(data=data, val_idx=val_idx, images=train_images, test_images=test_images)
    value = write_predictions(spec, model, images, spec.batch_size, Augmenter(serialized(spec.augment)), out)
    print(f"{out}: predicted with {len(views(spec, None))} view(s); fold {fold} {spec.metric}: {value:.5f}")
    return out
