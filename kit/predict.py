"""Predictions of a trained fold: OOF for its validation images, test for every test image,
each averaged over the spec's test-time views (the image, flips, seeded augmentations)."""
import numpy as np

from kit import KitError
from kit.augment import TTA_EPOCH, Augmenter, augmented_views, serialized
from kit.config import check_fold
from kit.folds import load_fold
from kit.inputs import eval_batches
from kit.members import member_spec
from kit.metrics import from_columns, spec_score, undefined_fold
from kit.model import releasing  # importing kit.model registers the kit's layers, for loading
from kit.pretrained import load_model
from kit.runs import run_of


def views(spec, augment):
    """Test-time views: the image itself, the spec's flips, `tta_augment` seeded augmentations
    by the training pipeline."""
    found = [None]
    if "hflip" in spec.tta:
        found.append(lambda image, i: image[:, ::-1])
    if "vflip" in spec.tta:
        found.append(lambda image, i: image[::-1])
    return found + augmented_views(augment, spec.seed, TTA_EPOCH, spec.tta_augment)


def predict(model, images, indices, batch, views, workers=0):
    """Mean model outputs over the views."""
    runs = [model.predict(eval_batches(images, indices, batch, workers=workers, view=v, pad=True), verbose=0)
            for v in views]
    return np.mean(runs, axis=0)[:len(indices)]


def write_predictions(spec, model, fold, batch, augment, run):
    """oof.csv and test.csv of a fold (kit/folds.Fold) in its run folder. Returns the fold's
    OOF score."""
    seen, data, task = views(spec, augment), fold.data, spec.task
    oof = from_columns(task, predict(model, fold.images, fold.val_idx, batch, seen, spec.workers))
    test = from_columns(task, predict(model, fold.test_images, np.arange(len(data.test)), batch, seen,
                                      spec.workers))
    run.write_predictions(task, data.classes, data.train["id"].to_numpy()[fold.val_idx], oof,
                          data.test["id"], test)
    run.record(tta=list(spec.tta), tta_augment=spec.tta_augment)  # what a release must predict with
    why = undefined_fold(spec.metric, fold.index, data.y[fold.val_idx], data.classes)
    if why:  # said once, here, rather than by sklearn at every epoch
        run.log(why)
    return spec_score(spec, data.y[fold.val_idx], oof)


@releasing
def predict_fold(spec, member, fold):
    """Predict again with a trained fold's saved model (e.g. after changing the TTA)."""
    backbone, spec = member_spec(spec, member)
    check_fold(spec, fold)
    run = run_of(spec, member, fold)
    if not run.model.is_file():
        raise KitError(f"no trained model at {run.model}: train the fold first")
    model = load_model(run.model)
    trained_at = model.inputs[0].shape[1]
    f = load_fold(spec, backbone, fold)
    if f.size != trained_at:
        raise KitError(f"{run.path} was trained on {trained_at}px images, not {f.size}px: predict at its "
                       f"size (image_size={trained_at})")
    value = write_predictions(spec, model, f, spec.batch_size, Augmenter(serialized(spec.augment)), run)
    print(f"{run.path}: predicted with {len(views(spec, None))} view(s); "
          f"fold {fold} {spec.metric}: {value:.5f}")
    return run.path
