"""The embedded demo competition: synthetic images laid out like a Kaggle download.

    data/demo/train/<id>.png, train.csv (id,label), test/<id>.png, sample_submission.csv
    (id + one probability column per class, scored by log loss)

Each image shows a few shapes on a noisy background; the label is the kind of shape drawn
largest, and the colours lean towards the class without deciding it. A tenth of the training
labels are wrong, as in real data, so cross-validation lands clearly above chance and below 1.
Generated from a seed: the same seed writes the same bytes.
"""
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

CLASSES = ("circle", "square", "triangle")
N_TRAIN, N_TEST, SIDE = 300, 100, 48
LABEL_NOISE = 0.1


def _draw(rng, kind, canvas, size, colour):
    cx, cy = rng.integers(size // 2, SIDE - size // 2, 2)  # may cross the border, as in photos
    if kind == "circle":
        cv2.circle(canvas, (int(cx), int(cy)), int(size), colour, -1, cv2.LINE_AA)
    elif kind == "square":
        cv2.rectangle(canvas, (int(cx - size), int(cy - size)), (int(cx + size), int(cy + size)), colour, -1)
    else:
        points = np.array([[cx, cy - size], [cx - size, cy + size], [cx + size, cy + size]], np.int32)
        cv2.fillPoly(canvas, [points], colour, cv2.LINE_AA)


def _image(rng, label):
    canvas = rng.normal(110, 25, (SIDE, SIDE, 3)).clip(0, 255).astype(np.uint8)
    hue = (label * 60 + rng.normal(0, 20)) % 180  # the class's hue, blurred across classes
    colour = cv2.cvtColor(np.uint8([[[hue, 200, 230]]]), cv2.COLOR_HSV2RGB)[0, 0].tolist()
    for _ in range(rng.integers(0, 3)):  # small distractor shapes of any kind and colour
        kind, size, other = CLASSES[rng.integers(3)], int(rng.integers(3, 6)), rng.integers(0, 256, 3)
        _draw(rng, kind, canvas, size, other.tolist())
    _draw(rng, CLASSES[label], canvas, int(rng.integers(12, 18)), colour)
    return canvas


def generate(root, seed=0):
    """Write the demo competition to `root` (atomically: a complete folder or none)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=root.parent))
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        (tmp / split).mkdir()
        labels = rng.integers(0, len(CLASSES), n)
        ids = [f"{split[:2]}{i:04d}" for i in rng.permutation(10_000)[:n]]
        for image_id, label in zip(ids, labels):
            Image.fromarray(_image(rng, label)).save(tmp / split / f"{image_id}.png")
        if split == "train":
            noisy = rng.random(n) < LABEL_NOISE
            labels = np.where(noisy, rng.integers(0, len(CLASSES), n), labels)
            train = pd.DataFrame({"id": ids, "label": [CLASSES[k] for k in labels]})
            train.to_csv(tmp / "train.csv", index=False)
        else:
            sample = pd.DataFrame({"id": ids, **{c: 1 / len(CLASSES) for c in CLASSES}})
            sample.to_csv(tmp / "sample_submission.csv", index=False, float_format="%.6f")
    try:
        tmp.rename(root)
    except OSError:  # another process generated it meanwhile
        shutil.rmtree(tmp)
    return root
