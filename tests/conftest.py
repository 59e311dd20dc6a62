"""Fixtures: a tiny competition and its spec, and the stand-in Kaggle server."""
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow starts, in this process

from kit.config import load_spec  # noqa: E402
from kit.data import load_data  # noqa: E402
from kit.folds import load_folds  # noqa: E402
from kit.runs import run_of  # noqa: E402
from tests.helpers import spec_file, write_competition  # noqa: E402
from tests.kaggle_server import serve  # noqa: E402


@pytest.fixture
def tiny(tmp_path):
    """A maker of specs (TINY + overrides) of a 2-class csv competition with 24 train and 8 test
    images in tmp_path/data."""
    write_competition(tmp_path / "data")

    def make(**overrides):
        return load_spec(str(spec_file(tmp_path, **overrides)))
    return make


@pytest.fixture
def photos(tmp_path):
    """Six 40 x 30 JPEGs' paths in tmp_path; the last one is broken."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
        paths.append(str(tmp_path / f"{i}.jpg"))
    (tmp_path / "5.jpg").write_bytes(b"broken")
    return paths


@pytest.fixture
def kaggle_server(tmp_path, monkeypatch):
    """The stand-in server, and an environment where the client finds only a dummy token."""
    yield from serve(tmp_path, monkeypatch)


@pytest.fixture
def kaggle_python():
    """The Python of Kaggle's image (.venv-kaggle, made by make test-kaggle, which sets it)."""
    python = os.environ.get("KIT_KAGGLE_PYTHON")
    if not python:
        pytest.fail("KIT_KAGGLE_PYTHON is not set: the kaggle_image tests run with make test-kaggle")
    return os.path.abspath(python)  # not resolved: a venv's python is a link out of the venv


@pytest.fixture
def kaggle_wheels():
    """The wheels dataset's folder `make wheels` made for them (make test-kaggle sets it)."""
    folder = os.environ.get("KIT_KAGGLE_WHEELS")
    if not folder:
        pytest.fail("KIT_KAGGLE_WHEELS is not set: the kaggle_image tests run with make test-kaggle")
    return Path(folder).absolute()


def _stand_in_model(path, seed):
    """A real saved Keras model, not a backbone: what a release reads weights from."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((2,))
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Identity(name="base")(inputs))
    keras.Model(inputs, outputs).save(path)


@pytest.fixture
def fake_runs(tmp_path):
    """(spec, data, write) of a 2-class competition in 2 folds (log loss; vgg16, resnet50,
    xception): `write(backbone, fold, noise, seed)` leaves a finished run with made-up
    predictions, a config and a stand-in model (a tiny saved Keras model), and returns its test
    P(a). No training."""
    write_competition(tmp_path / "data")
    spec = load_spec(str(spec_file(tmp_path, metric="log_loss", backbones=["vgg16", "resnet50", "xception"])))
    data = load_data(spec)
    fold_of = load_folds(spec, data)

    def write(backbone, fold, noise, seed=0):
        rng = np.random.default_rng(seed)
        run = run_of(spec, backbone, fold)
        run.path.mkdir(parents=True)
        val = fold_of == fold
        truth = np.eye(2)[data.y[val].astype(int)]
        p = np.clip(truth * (1 - noise) + rng.random(truth.shape) * noise, 0.01, 0.99)
        p /= p.sum(1, keepdims=True)
        pd.DataFrame({"id": data.train["id"][val], "a": p[:, 0], "b": p[:, 1]}).to_csv(run.oof, index=False)
        t = rng.random(len(data.test))
        pd.DataFrame({"id": data.test["id"], "a": t, "b": 1 - t}).to_csv(run.test, index=False)
        run.config.write_text(f"backbone: {backbone}\nfold: {fold}\nimage_size: 32\n")
        _stand_in_model(run.model, seed=100 * fold + seed)
        return t
    return spec, data, write
