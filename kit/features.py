"""Head-only phases on cached features. With the base frozen, an image's pooled base output never
changes: it is computed once (for the images as they are, and for `feature_copies` augmented
copies) and the head trains on it, far faster than end to end.

The head model shares its layers with the full model, so training it trains the full model's
head; it also shares the full model's optimizer, so checkpoints and resuming work unchanged.
"""
import math
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kit.inputs import _batches, epoch_keys, epoch_order, eval_batches

COPY_EPOCH = 2**30  # augmented copies use the training pipeline as in epochs no run reaches


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
        for x in eval_batches(images, indices, batch_size, workers=workers, view=view):
            values = keras.ops.convert_to_numpy(pooled.predict_on_batch(x))
            out[v, start:start + len(values)] = values
            start += len(values)
    return out


def copies(augment, seed, n):
    """The views features are computed for: the image itself and `n` augmented copies."""
    return [None] + [lambda image, i, c=c: augment(image, seed, COPY_EPOCH + c, i) for c in range(n)]


def fold_features(spec, model, fold, augment, batch_size):
    """(training features of every copy, validation features) of a fold (train._prepare)."""
    views = copies(augment, spec.seed, spec.feature_copies)
    train = extract(model, fold.images, fold.train_idx, batch_size, views, spec.cache_mb, spec.workers)
    val = extract(model, fold.images, fold.val_idx, batch_size, [None], spec.cache_mb, spec.workers)[0]
    return train, val


def feature_stream(features, y, seed, epochs, batch_size, limit=0, workers=0):
    """Like inputs.train_stream, on cached features: the same order for the same (seed, epoch),
    epoch e reading copy e mod (copies + 1)."""
    n_views, n, channels = features.shape
    steps = math.ceil(n / batch_size)
    if limit:
        steps = min(steps, limit)

    def load(key):
        epoch, step = (int(k) for k in key)
        chosen = epoch_order(seed, epoch, n)[step * batch_size:(step + 1) * batch_size]
        return np.asarray(features[epoch % n_views][chosen], np.float32), y[chosen]

    ds = _batches(load, epoch_keys(epochs, steps), (channels,), tf.float32, np.asarray(y), workers)
    return ds.prefetch(tf.data.AUTOTUNE), steps
