"""Tiny synthetic competitions on disk, and a spec for them: 1 epoch per phase, 32px, CPU."""
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

COLOURS = {"a": (200, 40, 40), "b": (40, 40, 200), "c": (40, 200, 40)}


def image(rng, label, side=20):
    """A noisy image whose mean colour depends on its class, so a model can learn something."""
    base = np.array(COLOURS.get(label, (120, 120, 120)), np.float32)
    return (base + rng.normal(0, 40, (side, side, 3))).clip(0, 255).astype(np.uint8)


def write_competition(root, n_train=24, n_test=8, classes=("a", "b"), ext=".png", seed=0):
    """A csv-layout competition: train/<id>.png, train.csv (id,label), test/, sample_submission.csv."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    labels = [classes[i % len(classes)] for i in range(n_train)]
    ids = [f"tr{i:03d}" for i in range(n_train)]
    for i, label in zip(ids, labels):
        Image.fromarray(image(rng, label)).save(root / "train" / f"{i}{ext}")
    pd.DataFrame({"id": ids, "label": labels}).to_csv(root / "train.csv", index=False)
    test_ids = [f"te{i:03d}" for i in range(n_test)]
    for i in test_ids:
        Image.fromarray(image(rng, classes[0])).save(root / "test" / f"{i}{ext}")
    sample = pd.DataFrame({"id": test_ids, **{c: 0.5 for c in classes}})
    sample.to_csv(root / "sample_submission.csv", index=False)
    return root


TINY = {
    "task": "multiclass", "metric": "accuracy", "weights": None, "image_size": 32, "batch_size": 8,
    "n_folds": 2, "seed": 0, "backbones": ["vgg16"], "augment": [{"HorizontalFlip": {"p": 0.5}}],
    "schedule": [
        {"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-3, "patience": 0},
        {"name": "finetune", "trainable": "top:1", "epochs": 1, "lr": 1e-4, "patience": 0},
    ],
}


def spec_file(folder, **keys):
    """Write a spec (TINY + keys) to folder/tiny.yaml; data and runs live in `folder` too."""
    folder = Path(folder)
    raw = {"data_dir": str(folder / "data"), "runs_dir": str(folder / "runs"), **TINY, **keys}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def kernel_env(root, tmp_path):
    """The environment of a simulated Kaggle kernel with /kaggle at `root`: no credentials, no
    kit on the path but its own, an empty Keras cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_") and k != "PYTHONPATH"}
    env.update(KIT_KAGGLE_ROOT=str(root), KAGGLE_KERNEL_RUN_TYPE="Batch", HOME=str(tmp_path / "home"),
               KERAS_HOME=str(tmp_path / "keras-empty"))
    return env
