"""Input pipelines: images (decoded from disk, or from the cache) through parallel augmentation,
batched and prefetched, and the same epochs over cached base features (kit/features.py).
Image batches stay uint8 until the model's input casts them, on the device: a quarter of the
bytes to move.

Decoding and albumentations are Python; tf.data runs one Python call per *batch*, several at
once. Measured on 2 cores (512 JPEGs, 500x375 -> 128 px + augmentation): one call per image
was slower than a plain loop (480 vs 540 images/s: per-call overhead and GIL contention); one
per batch gave 810, close to keras' PyDataset with 2 threads (845). tf.data keeps the
epoch-indexed stream below, prefetching and distribution.
"""
import functools
import math

import numpy as np
import tensorflow as tf


def _batches(load, keys, shape, dtype, y, workers):
    """Batches from `load(key) -> (x batch, labels)`, `workers` at a time (0: autotune)."""
    def call(key):
        x, labels = tf.numpy_function(load, [key], (dtype, tf.as_dtype(y.dtype)), stateful=False)
        x.set_shape((None, *shape))
        labels.set_shape((None, *y.shape[1:]))
        return x, labels
    return tf.data.Dataset.from_tensor_slices(keys).map(call, num_parallel_calls=workers or tf.data.AUTOTUNE,
                                                         deterministic=True)


def epoch_keys(epochs, steps):
    return np.array([(e, s) for e in range(*epochs) for s in range(steps)], np.int64).reshape(-1, 2)


@functools.lru_cache(maxsize=8)  # asked once per batch; batches of two epochs may be in flight
def epoch_order(seed, epoch, n):
    """The order of epoch `epoch`: a function of (seed, epoch) only (read-only: it is shared)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False
    return order


def train_stream(images, indices, y, augment, seed, epochs, batch_size, limit=0, workers=0):
    """(dataset, steps per epoch): images[indices[k]] with label y[k], epochs [first, last) in one
    stream. Epoch e's order and every image's augmentation depend only on (seed, e, image), never
    on how many epochs ran before in this process: a resumed run sees what an uninterrupted one
    would have."""
    indices, y = np.asarray(indices), np.asarray(y)

    def load(key):
        epoch, chosen = _chosen(key, seed, len(indices), batch_size)
        batch = [images[indices[k]] for k in chosen]
        if augment:
            batch = [augment(image, seed, epoch, int(indices[k])) for image, k in zip(batch, chosen)]
        return np.stack(batch), y[chosen]

    return _epochs(load, len(indices), (images.size, images.size, 3), tf.uint8, y, epochs, batch_size, limit,
                   workers)


def feature_stream(features, y, seed, epochs, batch_size, limit=0, workers=0):
    """Like train_stream, on cached features (views, images, channels): the same order for the
    same (seed, epoch), epoch e reading view e mod (number of views)."""
    n_views, n, channels = features.shape
    y = np.asarray(y)

    def load(key):
        epoch, chosen = _chosen(key, seed, n, batch_size)
        return np.asarray(features[epoch % n_views][chosen], np.float32), y[chosen]

    return _epochs(load, n, (channels,), tf.float32, y, epochs, batch_size, limit, workers)


def _chosen(key, seed, n, batch_size):
    """(epoch, the positions in batch `step` of that epoch) for a key (epoch, step)."""
    epoch, step = (int(k) for k in key)
    return epoch, epoch_order(seed, epoch, n)[step * batch_size:(step + 1) * batch_size]


def _epochs(load, n, shape, dtype, y, epochs, batch_size, limit, workers):
    """(dataset, steps per epoch) of `load` over every (epoch, step) of `epochs`."""
    steps = math.ceil(n / batch_size)
    if limit:
        steps = min(steps, limit)
    ds = _batches(load, epoch_keys(epochs, steps), shape, dtype, y, workers)
    return ds.prefetch(tf.data.AUTOTUNE), steps


def eval_batches(images, indices, batch_size, y=None, workers=0, view=None, pad=False):
    """images[indices] in order (with labels when given), for validation and prediction.
    `view(image, index)` transforms each image (test-time augmentation). `pad`: the last batch
    filled up with its last image, so that every batch has one shape and a model's prediction
    function is traced once (the caller drops the extra rows)."""
    indices = np.asarray(indices)
    if pad and len(indices) % batch_size:
        indices = np.concatenate([indices, np.full(batch_size - len(indices) % batch_size, indices[-1])])
    labels = np.zeros(len(indices), np.float32) if y is None else np.asarray(y)

    def load(step):
        chosen = range(step * batch_size, min(len(indices), (step + 1) * batch_size))
        batch = [images[indices[k]] for k in chosen]
        if view:
            batch = [np.ascontiguousarray(view(image, int(indices[k]))) for image, k in zip(batch, chosen)]
        return np.stack(batch), labels[list(chosen)]

    shape = (images.size, images.size, 3)
    ds = _batches(load, np.arange(math.ceil(len(indices) / batch_size)), shape, tf.uint8, labels, workers)
    return (ds if y is not None else ds.map(lambda x, _: x)).prefetch(tf.data.AUTOTUNE)


def on_device(ds, device):
    """Batches copied to `device` ahead of use, overlapping the copy with the step (one GPU;
    several are fed by their distribution strategy)."""
    return ds.apply(tf.data.experimental.prefetch_to_device(device, buffer_size=2))
