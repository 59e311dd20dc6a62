"""Outputs of a frozen part of the model, computed once and trained on. With the base frozen, an
image's pooled base output never changes: a head-only phase trains the head on it (head_of). In a
`top:K` phase the part below the opened blocks is frozen: the phase trains on its output at the
cut (kit/prefix.py). Either is computed for the images as they are and for `feature_copies`
augmented copies (epoch e reads copy e mod (copies + 1), kit/inputs.feature_stream).

The trained model shares its layers with the full model, so training it trains the full model;
it also shares the full model's optimizer, so checkpoints and resuming work unchanged.
"""
import math
import os
import shutil
import tempfile

import keras
import numpy as np

from kit import KitError
from kit.augment import COPY_EPOCH, augmented_views
from kit.env import available_memory
from kit.files import reserve, size_text
from kit.inputs import eval_batches


def head_of(model):
    """pooled features -> dropout -> dense, sharing the full model's layers."""
    inputs = keras.Input(model.get_layer("pool").output.shape[1:], name="features")
    return keras.Model(inputs, model.get_layer("head")(model.get_layer("dropout")(inputs)))


def pooled_of(model):
    return keras.Model(model.inputs, model.get_layer("pool").output)


def cache_bytes(net, n_images, n_views):
    """What `extract` keeps: views x images x the output's size, in the precision it computes."""
    shape = net.outputs[0].shape[1:]
    return n_views * n_images * math.prod(shape) * np.dtype(net.outputs[0].dtype).itemsize


WITHOUT = {"head": "feature_cache: false", "prefix": "prefix_cache: off"}  # the keys doing without each


def room(nbytes, limit_mb, folder=None, keys=WITHOUT["prefix"]):
    """Where `nbytes` of outputs go: memory under `limit_mb`, else a file in `folder` (the
    system's temporary folder), else, when its disk is short, memory if the machine has it
    free; before any work, one line when neither holds them, naming `keys` that do without."""
    if nbytes <= limit_mb * 2**20:
        return "memory"
    folder = folder or tempfile.gettempdir()
    os.makedirs(folder, exist_ok=True)
    free, memory = shutil.disk_usage(folder).free, available_memory()
    if nbytes <= free:
        return folder
    if nbytes <= memory / 2:  # past cache_mb, and leaving the training its half
        return "memory"
    raise KitError(f"the cached outputs need {size_text(nbytes)} and {folder} has {size_text(free)} free "
                   f"(memory: {size_text(memory)}): free some, or set {keys} or fewer feature_copies")


def extract(net, images, indices, batch_size, views, limit_mb, workers=0, folder=None,
            keys=WITHOUT["prefix"]):
    """(views, images, *output shape) outputs of `net` (a frozen part of the model), batch by
    batch, in the precision it computes: in memory when under `limit_mb`, else in a file (deleted
    with the array; its blocks claimed first, so a disk that fills is an OSError, not a Bus error)."""
    shape = (len(views), len(indices), *net.outputs[0].shape[1:])
    dtype = np.dtype(net.outputs[0].dtype)
    where = room(cache_bytes(net, len(indices), len(views)), limit_mb, folder, keys)
    if where == "memory":
        out = np.empty(shape, dtype)
    else:
        fd, path = tempfile.mkstemp(suffix=".npy", dir=where)
        out = np.lib.format.open_memmap(path, "w+", dtype, shape)
        os.close(fd)
        try:
            reserve(path, os.path.getsize(path), f"the cached outputs in {where}")
        finally:
            os.unlink(path)  # the mapping lives on; the disk space goes with it
    for v, view in enumerate(views):
        start = 0
        for x in eval_batches(images, indices, batch_size, workers=workers, view=view, pad=True):
            values = keras.ops.convert_to_numpy(net.predict_on_batch(x))[:len(indices) - start]
            out[v, start:start + len(values)] = values
            start += len(values)
    return out


def fold_features(spec, net, fold, augment, batch_size, folder=None, source="prefix"):
    """(outputs of `net` for the fold's training images and their `feature_copies` augmented
    copies, for its validation images). `source`: head (pooled outputs) or prefix."""
    views = [None, *augmented_views(augment, spec.seed, COPY_EPOCH, spec.feature_copies)]
    where = dict(limit_mb=spec.cache_mb, workers=spec.workers, folder=folder, keys=WITHOUT[source])
    train = extract(net, fold.images, fold.train_idx, batch_size, views, **where)
    val = extract(net, fold.images, fold.val_idx, batch_size, [None], **where)[0]
    return train, val
