"""Fixtures: a tiny competition and its spec, and the stand-in Kaggle server."""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow starts, in this process

from kit.config import load_spec  # noqa: E402
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
def kaggle_server(tmp_path, monkeypatch):
    """The stand-in server, and an environment where the client finds only a dummy token."""
    yield from serve(tmp_path, monkeypatch)
