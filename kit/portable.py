"""A model as a file that every keras the kit supports reads: a release's models.

A .keras file carries each layer's config as the keras that saved it writes it, and an older
keras refuses what it does not know (keras 3.15's initializers gained `input_axes`, which 3.13.2,
Kaggle's, rejects). Weights carry no config: the model is built again from the registry
(kit/backbones.py, the same code that built it for training) and its weights are put back in
the order of `model.weights`, every shape checked.

    <name>.weights.npz   w0000.npy ... one array per variable, in order; about.npy: the
                         variables' paths and the dtype policy the model ran with

Written with a fixed timestamp in every zip entry: the same weights give the same bytes, so a
release rebuilt from unchanged runs is unchanged.
"""
import json
import zipfile

import keras
import numpy as np

from kit import KitError
from kit.files import atomic_path
from kit.model import build_model

STAMP = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: no clock in the bytes


def save_portable(model, path):
    """The model's weights (and the dtype policy its base computed in) as `path`."""
    about = {"paths": [v.path for v in model.weights], "policy": model.get_layer("base").dtype_policy.name}
    entries = {f"w{k:04d}": keras.ops.convert_to_numpy(v) for k, v in enumerate(model.weights)}
    entries["about"] = np.array(json.dumps(about))
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as saved:
        for name, array in entries.items():
            with saved.open(zipfile.ZipInfo(f"{name}.npy", STAMP), "w") as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def load_portable(path, backbone, task, n_classes, size):
    """The model of `backbone` at `size` px for `task`, built by the registry and given the
    weights saved in `path`; one line if they are not that model's (another kit's registry)."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            about = json.loads(str(saved["about"]))
            arrays = [saved[f"w{k:04d}"] for k in range(len(about["paths"]))]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise KitError(f"{path} is not a readable weights file ({e}): make release again") from None
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(about["policy"])
    try:
        model, _ = build_model(backbone, task, n_classes, size, None, 0.0)
    finally:
        keras.config.set_dtype_policy(previous)
    variables = model.weights
    wrong = [f"{name} {a.shape}" for name, a, v in zip(about["paths"], arrays, variables)
             if a.shape != tuple(v.shape)]
    if len(arrays) != len(variables) or wrong:
        first = wrong[0] if wrong else f"{len(arrays)} variables, the model has {len(variables)}"
        raise KitError(f"{path} holds other weights than {backbone} at {size}px as this kit builds it "
                       f"({first}): make release again with this kit")
    model.set_weights(arrays)
    return model
