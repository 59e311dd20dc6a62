"""Input pipelines: images (decoded from disk, or from the cache) through parallel augmentation,
batched and prefetched, and the same epochs over cached outputs (kit/features.py). Image
batches stay uint8 until the model's input casts them, on the device: a quarter of the bytes to
move.

Decoding and albumentations are Python that releases the GIL in its C parts (Pillow, OpenCV).
A batch's images are spread over a pool of threads, one per core (`workers`), and tf.data runs
two batches at once, in order, so the next batch is under way while one finishes: `make bench`
measures this against plain thread and process pools running the same functions (processes
lose: pickling each image costs more than the GIL does). tf.data keeps the epoch-indexed stream
below, prefetching and distribution. What a batch holds never depends on the thread count.
"""
import functools
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from kit.env import worker_count


def _batches(load, count, shape, dtype, y):
    """Batches `load(position) -> (x batch, labels)` of positions 0..count-1, in order."""
    def call(position):
        x, labels = tf.numpy_function(load, [position], (dtype, tf.as_dtype(y.dtype)), stateful=False)
        x.set_shape((None, *shape))
        labels.set_shape((None, *y.shape[1:]))
        return x, labels
    return tf.data.Dataset.range(count).map(call, num_parallel_calls=2, deterministic=True)


class Ahead:
    """A stream's batches of images made on a pool of threads, the next batches' images submitted
    before this one's are done, so that no thread waits at a batch's end (as a plain pool over the
    images would not); at most `ahead` + 1 batches in flight. `images_of(position)`: the makers
    of one batch's images, each written straight into the batch. A batch is the same whatever the
    threads: each image depends only on its position. One worker: made in the caller's thread."""

    def __init__(self, images_of, count, shape, workers, ahead=2):
        self.images_of, self.count, self.shape, self.ahead = images_of, count, shape, ahead
        n = worker_count(workers)
        self.pool = ThreadPoolExecutor(n, thread_name_prefix="kit-input") if n > 1 else None
        self.pending, self.next, self.lock = {}, 0, threading.Lock()

    def _submit(self, position):
        makers = self.images_of(position)
        batch = np.empty((len(makers), *self.shape), np.uint8)

        def fill(j):
            batch[j] = makers[j]()
        return batch, [self.pool.submit(fill, j) for j in range(len(makers))]

    def __call__(self, position):
        if self.pool is None:
            return np.stack([make() for make in self.images_of(position)])
        with self.lock:
            if position not in self.pending and position < self.next:  # a new pass over the stream
                self.next = position
            while self.next < min(position + self.ahead + 1, self.count):
                if self.next not in self.pending:
                    self.pending[self.next] = self._submit(self.next)
                self.next += 1
            batch, futures = self.pending.pop(position)
        for f in futures:
            f.result()  # an image's error is raised here, in the stream
        return batch


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
    keys = _keys(len(indices), epochs, batch_size, limit)

    def images_of(position):
        epoch, chosen = _chosen(keys[position], seed, len(indices), batch_size)
        if not augment:
            return [functools.partial(images.__getitem__, indices[k]) for k in chosen]
        return [functools.partial(_augmented, images, augment, int(indices[k]), seed, epoch) for k in chosen]
    made = Ahead(images_of, len(keys), (images.size, images.size, 3), workers)

    def load(position):
        epoch, chosen = _chosen(keys[position], seed, len(indices), batch_size)
        return made(position), y[chosen]

    return _dataset(load, keys, (images.size, images.size, 3), tf.uint8, y)


def _augmented(images, augment, index, *seed):
    return augment(images[index], *seed, index)


def feature_stream(features, y, seed, epochs, batch_size, limit=0):
    """Like train_stream, on cached outputs (views, images, *shape) of a frozen part of the model
    (kit/features.py), in their precision: the same order for the same (seed, epoch), epoch e
    reading view e mod (number of views)."""
    n_views, n = features.shape[:2]
    y, keys = np.asarray(y), _keys(n, epochs, batch_size, limit)

    def load(position):
        epoch, chosen = _chosen(keys[position], seed, n, batch_size)
        rows = features[epoch % n_views][np.sort(chosen)]  # in file order: a memory-mapped cache reads ahead
        return np.asarray(rows[np.argsort(np.argsort(chosen))]), y[chosen]

    return _dataset(load, keys, features.shape[2:], tf.as_dtype(features.dtype), y)


def _chosen(key, seed, n, batch_size):
    """(epoch, the positions in batch `step` of that epoch) for a key (epoch, step)."""
    epoch, step = (int(k) for k in key)
    return epoch, epoch_order(seed, epoch, n)[step * batch_size:(step + 1) * batch_size]


def _keys(n, epochs, batch_size, limit):
    """(epoch, step) of every batch of `epochs` over n images (at most `limit` steps an epoch)."""
    steps = math.ceil(n / batch_size)
    return epoch_keys(epochs, min(steps, limit) if limit else steps)


def _dataset(load, keys, shape, dtype, y):
    """(dataset, steps per epoch) of `load` over every (epoch, step) key."""
    steps = int((keys[:, 0] == keys[0, 0]).sum()) if len(keys) else 0
    return _batches(load, len(keys), shape, dtype, y).prefetch(tf.data.AUTOTUNE), steps


def eval_batches(images, indices, batch_size, y=None, workers=0, view=None, pad=False):
    """images[indices] in order (with labels when given), for validation and prediction.
    `view(image, index)` transforms each image (test-time augmentation). `pad`: the last batch
    filled up with its last image, so that every batch has one shape and a model's prediction
    function is traced once (the caller drops the extra rows)."""
    indices = np.asarray(indices)
    if pad and len(indices) % batch_size:
        indices = np.concatenate([indices, np.full(batch_size - len(indices) % batch_size, indices[-1])])
    labels = np.zeros(len(indices), np.float32) if y is None else np.asarray(y)
    batches = lambda step: range(step * batch_size, min(len(indices), (step + 1) * batch_size))

    def images_of(step):
        if not view:
            return [functools.partial(images.__getitem__, indices[k]) for k in batches(step)]
        return [functools.partial(_viewed, images, view, int(indices[k])) for k in batches(step)]
    count = math.ceil(len(indices) / batch_size)
    made = Ahead(images_of, count, (images.size, images.size, 3), workers)

    def load(step):
        return made(step), labels[list(batches(step))]

    ds = _batches(load, count, (images.size, images.size, 3), tf.uint8, labels)
    return (ds if y is not None else ds.map(lambda x, _: x)).prefetch(tf.data.AUTOTUNE)


def _viewed(images, view, index):
    return np.ascontiguousarray(view(images[index], index))


def on_device(ds, device):
    """Batches copied to `device` ahead of use, overlapping the copy with the step (one GPU;
    several are fed by their distribution strategy)."""
    return ds.apply(tf.data.experimental.prefetch_to_device(device, buffer_size=2))
