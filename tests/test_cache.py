"""Decoded images kept (memory or disk), and head phases trained on cached base features."""
import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import kit.cache
from kit.cache import load_images
from kit.decode import read_rgb
from kit.features import pooled_of
from kit.inputs import feature_stream
from kit.train import run_fold


@pytest.mark.parametrize("mode, kept", [("memory", 6), ("off", 0), ("disk", 6)])
def test_every_cache_mode_reads_what_decoding_gives_and_finds_the_broken(photos, tmp_path, mode, kept):
    images, bad = load_images(photos, 16, mode, folder=tmp_path / "cache")
    assert len(images.array) == kept and len(images) == 6 and images.size == 16
    assert list(bad) == [photos[5]]
    for i in range(5):
        np.testing.assert_array_equal(images[i], read_rgb(photos[i], 16))


def test_auto_keeps_in_memory_what_fits_and_puts_the_rest_on_disk(photos, tmp_path):
    small, _ = load_images(photos, 16, "auto", folder=tmp_path / "cache", limit_mb=1)
    assert isinstance(small.array, np.ndarray) and not isinstance(small.array, np.memmap)
    big, _ = load_images(photos, 16, "auto", folder=tmp_path / "cache", limit_mb=0)
    assert isinstance(big.array, np.memmap)


def test_the_disk_cache_is_reused_and_remade_when_an_image_changes(photos, tmp_path, monkeypatch):
    load_images(photos, 16, "disk", folder=tmp_path / "cache")
    files = sorted(p.name for p in (tmp_path / "cache").glob("*.*[!k]"))  # not the .lock beside them
    assert len(files) == 2 and files[0].startswith("images-16-") and files[0].endswith(".json")

    def no_decoding(*args):
        raise AssertionError("decoded again")
    monkeypatch.setattr(kit.containers, "read_rgb", no_decoding)
    images, bad = load_images(photos, 16, "disk", folder=tmp_path / "cache")
    assert list(bad) == [photos[5]] and images[0].shape == (16, 16, 3)
    monkeypatch.undo()
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(photos[0])
    images, _ = load_images(photos, 16, "disk", folder=tmp_path / "cache")
    assert images[0].max() == 0 and len(list((tmp_path / "cache").glob("*.np[y]"))) == 2


def test_a_decode_killed_midway_leaves_no_file_behind_the_next_run(photos, tmp_path):
    load_images(photos, 16, "disk", folder=tmp_path / "cache")
    done = next((tmp_path / "cache").glob("images-16-*.npy"))
    left = tmp_path / "cache" / f".{done.stem}-k1llme.npy"  # as atomic_path names it; kill -9 keeps it
    left.write_bytes(b"x" * 1000)
    other = tmp_path / "cache" / ".images-16-0123456789abcdef-live.npy"  # another set's, maybe being written
    other.write_bytes(b"x")
    load_images(photos, 16, "disk", folder=tmp_path / "cache")
    assert not left.exists() and other.exists()


def test_feature_epochs_follow_the_image_order_and_cycle_through_copies():
    features = np.stack([np.full((5, 2), c, np.float32) + np.arange(5)[:, None] / 10 for c in range(3)])
    y = np.arange(5)
    ds, steps = feature_stream(features, y, 0, (0, 4), 5)
    batches = [(np.asarray(x), np.asarray(labels)) for x, labels in ds]
    assert steps == 1 and len(batches) == 4
    for epoch, (x, labels) in enumerate(batches):
        np.testing.assert_allclose(x[:, 0], epoch % 3 + labels / 10)  # copy e mod 3, labels alongside
        assert sorted(labels.tolist()) == list(range(5))
    from kit.inputs import epoch_order
    assert batches[1][1].tolist() == epoch_order(0, 1, 5).tolist()  # as the image stream orders epoch 1


@pytest.mark.slow
def test_a_head_phase_on_cached_features_matches_the_end_to_end_one(tiny, tmp_path):
    """Same data (no augmentation), same order, same dropout: the same head, up to float noise."""
    head = [{"name": "head", "trainable": "none", "epochs": 3, "lr": 1e-2, "patience": 0}]
    runs = {}
    for cached in (True, False):
        spec = tiny(schedule=head, augment=[], feature_cache=cached, runs_dir=str(tmp_path / f"runs-{cached}"))
        out = run_fold(spec, "resnet50", 0)
        runs[cached] = (pd.read_csv(out / "history.csv"), pd.read_csv(out / "oof.csv"))
        assert ("head on cached features" in (out / "log.txt").read_text()) == cached
    (h1, o1), (h2, o2) = runs[True], runs[False]
    np.testing.assert_allclose(h1[["loss", "val_loss"]], h2[["loss", "val_loss"]], rtol=1e-4)
    np.testing.assert_allclose(o1[["a", "b"]], o2[["a", "b"]], atol=1e-4)


@pytest.mark.parametrize("limit_mb", [64, 0])  # in memory, and in a temporary file
def test_feature_copies_are_augmented_views_of_the_training_images(tiny, limit_mb):
    from kit.augment import Augmenter, serialized
    from kit.features import fold_features
    from kit.folds import load_fold
    from kit.model import build_model

    spec = tiny(feature_copies=2, cache_mb=limit_mb, augment=[{"HorizontalFlip": {"p": 1.0}},
                                                               {"RandomBrightnessContrast": {"p": 1.0}}])
    fold = load_fold(spec, "vgg16", 0)
    model, _ = build_model("vgg16", "binary", 2, fold.size, None, 0.0)
    train, val = fold_features(spec, pooled_of(model), fold, Augmenter(serialized(spec.augment)), 4)
    pooled = keras.Model(model.inputs, model.get_layer("pool").output)
    plain = np.asarray(pooled.predict(np.stack([fold.images[i] for i in range(len(fold.images))]), verbose=0))
    assert train.shape == (3, len(fold.train_idx), plain.shape[1]) and val.shape == (len(fold.val_idx), plain.shape[1])
    np.testing.assert_allclose(train[0], plain[fold.train_idx], rtol=1e-5, atol=1e-6)  # copy 0: as they are
    np.testing.assert_allclose(val, plain[fold.val_idx], rtol=1e-5, atol=1e-6)  # validation is never augmented
    assert not np.allclose(train[1], train[0]) and not np.allclose(train[2], train[1])
