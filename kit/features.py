"""Head-only phases on cached features. With the base frozen, an image's pooled base output never
changes: it is computed once (for the images as they are, and for `feature_copies` augmented
copies) and the head trains on it, far faster than end to end (kit/inputs.feature_stream).

The head model shares its layers with the full model, so training it trains the full model's
head; it also shares the full model's optimizer, so checkpoints and resuming work unchanged.
"""
import math
import os
import tempfile

import keras
import numpy as np

from kit.augment import COPY_EPOCH, augmented_views
from kit.inputs import eval_batches


def head_of(model):
    """pooled features -> dropout -> dense, sharing the full model's layers."""
    inputs = keras.Input(model.get_layer("pool").output.shape[1:], name="features")
    return keras.Model(inputs, model.get_layer("head")(model.get_layer("dropout")(inputs)))


def extract(model, images, indices, batch_size, views, limit_mb, workers=0):
    """(views, images, channels) float32 pooled base outputs, batch by batch: in memory when
    under `limit_mb`, else in a temporary file (deleted with the array)."""
    pooled = keras.Model(model.inputs, model.get_layer("pool").output)
    shape = (len(views), len(indices), pooled.output.shape[-1])
    if math.prod(shape) * 4 <= limit_mb * 2**20:
        out = np.empty(shape, np.float32)
    else:
        fd, path = tempfile.mkstemp(suffix=".npy")
        out = np.lib.format.open_memmap(path, "w+", np.float32, shape)
        os.close(fd)
        os.unlink(path)  # the mapping lives on; the disk space goes with it
    for v, view in enumerate(views):
        start = 0
        for x in eval_batches(images, indices, batch_size, workers=workers, view=view, pad=True):
            values = keras.ops.convert_to_numpy(pooled.predict_on_batch(x))[:len(indices) - start]
            out[v, start:start + len(values)] = values
            start += len(values)
    return out


def fold_features(spec, model, fold, augment, batch_size):
    """(training features of the images and their `feature_copies` augmented copies, validation
    features) of a fold (kit/folds.Fold)."""
    views = [None, *augmented_views(augment, spec.seed, COPY_EPOCH, spec.feature_copies)]
    train = extract(model, fold.images, fold.train_idx, batch_size, views, spec.cache_mb, spec.workers)
    val = extract(model, fold.images, fold.val_idx, batch_size, [None], spec.cache_mb, spec.workers)[0]
    return train, val
