"""Input pipelines: images stream from disk through parallel decode (+ augmentation in training),
then batching and prefetch, so memory does not grow with the dataset.

Decoding and albumentations run as Python inside tf.data's parallel map: Pillow's decoders and
OpenCV release the GIL, so the map's threads work in parallel.
"""
import math

import numpy as np
import tensorflow as tf

from kit.data import read_rgb


def _image(fn, args, size):
    """One image decoded (and augmented) by Python inside the tf.data graph, as float32."""
    image = tf.numpy_function(fn, args, tf.uint8, stateful=False)
    image.set_shape((size, size, 3))
    return tf.cast(image, tf.float32)


def train_stream(paths, y, size, augment, seed, epochs, batch_size, limit=0, workers=0):
    """(dataset, steps per epoch) for epochs [first, last) in one stream.

    Epoch e's order and every image's augmentation depend only on (seed, e, image), never on
    how many epochs ran before in this process: a resumed run sees the data an uninterrupted one
    would have.
    """
    paths, labels = np.asarray(paths), tf.constant(y)
    n = len(paths)
    steps = math.ceil(n / batch_size)
    if limit:
        steps = min(steps, limit)

    def load(i, epoch):
        image = read_rgb(paths[i], size)
        return augment(image, seed, int(epoch), int(i)) if augment else image

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        ds = tf.data.Dataset.from_tensor_slices(order).take(steps * batch_size)
        ds = ds.map(lambda i: (_image(load, [i, epoch], size), tf.gather(labels, i)),
                    num_parallel_calls=workers or tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size)

    first, last = epochs
    ds = tf.data.Dataset.range(first, last).flat_map(epoch_batches)
    return ds.prefetch(tf.data.AUTOTUNE), steps


def eval_batches(paths, size, batch_size, y=None, workers=0):
    """Resized images in file order (with labels when given), for validation and prediction."""
    paths = np.asarray(paths)
    ds = tf.data.Dataset.range(len(paths)).map(
        lambda i: _image(lambda j: read_rgb(paths[j], size), [i], size),
        num_parallel_calls=workers or tf.data.AUTOTUNE)
    if y is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(y))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
