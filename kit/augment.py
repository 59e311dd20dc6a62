"""Albumentations pipelines from the spec. Train images only: validation and test are resized only.

The spec names the pipeline either as a list of transforms by name with their parameters

    augment:
      - HorizontalFlip: {p: 0.5}
      - OneOf: {p: 0.3, transforms: [{Blur: {}}, {GaussNoise: {}}]}

or as the path of a file written by `albumentations.save` (JSON or YAML). Both become
albumentations' own serialized form, so a pipeline round-trips through `A.to_dict`/`A.from_dict`.
"""
import random
import threading
import warnings
from pathlib import Path

import albumentations as A
import cv2
import numpy as np

from kit import KitError

# Augmented copies outside training (test-time views, cached feature copies) draw their random
# state as if in epochs no training run reaches: they never repeat a training epoch's draw.
TTA_EPOCH, COPY_EPOCH = 2**31, 2**30


def _transform(item):
    """One `Name: {params}` entry of the short form -> an albumentations transform."""
    if not (isinstance(item, dict) and len(item) == 1):
        raise KitError(f"augment: each entry is one 'Name: {{params}}' mapping, got {item!r}")
    (name, params), = item.items()
    cls = getattr(A, str(name), None)
    if not isinstance(cls, type):
        raise KitError(f"augment: albumentations has no transform named {name!r}")
    if params is not None and not isinstance(params, dict):
        raise KitError(f"augment: parameters of {name} must be a mapping, got {params!r}")
    params = dict(params or {})
    if "transforms" in params:
        params["transforms"] = [_transform(t) for t in params["transforms"]]
    return _build(lambda: cls(**params), name)


def serialized(augment):
    """The spec's `augment` value as albumentations' serialized dict, validated by building it."""
    if isinstance(augment, str):
        path = Path(augment)
        if not path.is_file():
            raise KitError(f"augment: no albumentations file at {path}")
        fmt = "yaml" if path.suffix in (".yaml", ".yml") else "json"
        compose = _build(lambda: A.load(str(path), data_format=fmt), str(path))
    else:
        compose = A.Compose([_transform(t) for t in augment])
    return A.to_dict(compose)


def _build(make, name):
    """Albumentations warns (instead of failing) on an unknown argument: a typo must fail here."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            transform = make()
        except Exception as e:  # invalid parameter: albumentations' (pydantic's) own words
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and "errors.pydantic" not in ln]
            raise KitError(f"augment: {name}: {'; '.join(lines) or type(e).__name__}"[:300]) from None
    for w in caught:
        if "not valid for transform" in str(w.message):
            raise KitError(f"augment: {name}: {w.message}")
    return transform


class Augmenter:
    """Applies the pipeline with a random state drawn from (seed, epoch, index), so an image gets
    the same augmentation in the same epoch whatever thread or order processes it."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self._local = threading.local()  # a Compose holds its random state: one per thread

    @property
    def empty(self):
        return not self.pipeline["transform"].get("transforms")

    def __call__(self, image, *seed):
        compose = getattr(self._local, "compose", None)
        if compose is None:
            compose = self._local.compose = A.from_dict(self.pipeline)
        rng = np.random.default_rng(seed)
        compose.set_random_state(rng, random.Random(int(rng.integers(2**63))))
        out = compose(image=image)["image"]
        if out.shape != image.shape:  # a crop or pad changed the size: back to the model's input
            out = cv2.resize(out, image.shape[1::-1], interpolation=cv2.INTER_AREA)
        return out


def augmented_views(augment, seed, first_epoch, n):
    """`n` views of an image by the training pipeline, view k seeded as epoch `first_epoch + k`:
    `view(image, index)`, the same for an image whatever the order or thread."""
    return [lambda image, i, k=k: augment(image, seed, first_epoch + k, i) for k in range(n)]
