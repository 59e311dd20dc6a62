import signal
import subprocess
import sys
import time

import albumentations as A
import numpy as np
import pytest
from PIL import Image

from kit.augment import Augmenter, serialized
from kit.cache import Images
from kit.config import load_spec
from kit.inputs import eval_batches, train_stream
from tests.helpers import ROOT

FLIP = serialized([{"HorizontalFlip": {"p": 0.5}}, {"RandomBrightnessContrast": {"p": 0.5}}])


@pytest.fixture
def images(tmp_path):
    """Ten 8x8 images; image i's top-left pixel is i*20, its top-right pixel 255."""
    paths = []
    for i in range(10):
        a = np.zeros((8, 8, 3), np.uint8)
        a[0, 0], a[0, -1] = i * 20, 255
        Image.fromarray(a).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    return Images(paths, 8)


ALL = np.arange(10)


def _batches(ds, steps_per_epoch, epochs):
    it = iter(ds)
    return [[tuple(np.asarray(t) for t in next(it)) for _ in range(steps_per_epoch)] for _ in range(epochs)]


def test_each_epoch_shows_every_image_once_in_a_seeded_order(images):
    y = np.arange(10)
    ds, steps = train_stream(images, ALL, y, None, 3, (0, 3), 4)
    assert steps == 3
    epochs = _batches(ds, steps, 3)
    orders = [np.concatenate([labels for _, labels in epoch]).tolist() for epoch in epochs]
    assert all(sorted(order) == list(range(10)) for order in orders)
    assert orders[0] != orders[1]
    for epoch in epochs:  # labels travel with their images
        for x, labels in epoch:
            assert (x[:, 0, 0, 0] == labels * 20).all()


def test_a_stream_resumed_at_epoch_k_sees_what_an_uninterrupted_one_saw(images):
    augment = Augmenter(FLIP)
    full, steps = train_stream(images, ALL, ALL, augment, 5, (0, 3), 4)
    resumed, _ = train_stream(images, ALL, ALL, augment, 5, (2, 3), 4)
    whole, tail = _batches(full, steps, 3)[2], _batches(resumed, steps, 1)[0]
    for (xa, ya), (xb, yb) in zip(whole, tail):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_augmentation_is_seeded_and_differs_between_epochs(images):
    augment = Augmenter(FLIP)
    runs = [_batches(train_stream(images, ALL, ALL, augment, seed, (0, 2), 10)[0], 1, 2)
            for seed in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0][0][0][0], runs[1][0][0][0])
    np.testing.assert_array_equal(runs[0][1][0][0], runs[1][1][0][0])
    assert not np.array_equal(runs[0][0][0][0], runs[2][0][0][0])
    flipped = [(x[:, 0, 0, 1] == 255).sum() for epoch in runs[0] for x, _ in epoch]
    assert 0 < sum(flipped) < 20  # some images flipped, not all


def test_limit_batches_caps_an_epoch(images):
    _, steps = train_stream(images, ALL, ALL, None, 0, (0, 1), 4, limit=2)
    assert steps == 2


def test_validation_and_test_images_are_only_resized_in_the_given_order(images):
    small = Images(images.paths, 4)
    order = np.array([3, 1, 4, 0, 9, 2, 6, 5, 8, 7])
    batches = list(eval_batches(small, order, 3, y=order))
    x = np.concatenate([np.asarray(b[0]) for b in batches])
    assert x.shape == (10, 4, 4, 3) and x.dtype == np.uint8  # cast to float by the model, on the device
    assert np.concatenate([np.asarray(b[1]) for b in batches]).tolist() == order.tolist()
    again = np.concatenate([np.asarray(b) for b in eval_batches(small, order, 3)])
    np.testing.assert_array_equal(x, again)
    np.testing.assert_array_equal(x, np.stack([small[i] for i in order]))  # resized only, in order


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_spec_can_name_an_albumentations_file(tmp_path, suffix):
    compose = A.Compose([A.VerticalFlip(p=0.3), A.OneOf([A.Blur(), A.GaussNoise()], p=0.2)])
    A.save(compose, str(tmp_path / f"aug{suffix}"), data_format=suffix[1:])
    spec = load_spec("demo", {"augment": str(tmp_path / f"aug{suffix}")})
    assert serialized(spec.augment)["transform"] == A.to_dict(compose)["transform"]


def test_augmentation_that_changes_the_size_is_resized_back():
    crop = Augmenter(serialized([{"RandomCrop": {"height": 5, "width": 6, "p": 1.0}}]))
    assert crop(np.zeros((8, 8, 3), np.uint8), 0, 0, 0).shape == (8, 8, 3)


def test_the_batches_are_the_same_whatever_the_number_of_threads(images):
    augment = Augmenter(FLIP)
    streams = {w: train_stream(images, ALL, ALL, augment, 7, (0, 3), 4, workers=w)[0] for w in (1, 2, 64)}
    one = _batches(streams[1], 3, 3)
    for w in (2, 64):  # 64: more than the cores, capped
        for epoch_a, epoch_b in zip(one, _batches(streams[w], 3, 3)):
            for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b):
                np.testing.assert_array_equal(xa, xb)
                np.testing.assert_array_equal(ya, yb)
    views = [np.concatenate(list(eval_batches(images, ALL[::-1], 3, workers=w, view=lambda im, i: im[:, ::-1])))
             for w in (1, 2)]
    np.testing.assert_array_equal(*views)
    assert (views[0][:, 0, -1, 0] == ALL[::-1] * 20).all()  # flipped, in the given order


def test_a_stream_read_twice_gives_the_same_batches(images):
    """Validation reads its stream every epoch: a second pass starts again from the first batch."""
    ds = eval_batches(images, ALL, 4, workers=2)
    first, again = np.concatenate(list(ds)), np.concatenate(list(ds))
    np.testing.assert_array_equal(first, again)
    partial = iter(ds)
    next(partial)  # a pass given up after one batch (its next batches were being made)
    np.testing.assert_array_equal(np.concatenate(list(ds)), first)


def test_ctrl_c_stops_a_stream_at_once(tmp_path):
    """The threads making images finish the few batches in flight, then the process ends."""
    code = (
        "import time, numpy as np\n"
        "from kit.inputs import train_stream\n"
        "class Slow:\n"
        "    size = 8\n"
        "    def __len__(self): return 100\n"
        "    def __getitem__(self, i): time.sleep(0.01); return np.zeros((8, 8, 3), np.uint8)\n"
        "ds, _ = train_stream(Slow(), np.arange(100), np.zeros(100), None, 0, (0, 1000), 10, workers=2)\n"
        "print('streaming', flush=True)\n"
        "for _ in ds: pass\n")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "streaming"
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    start = time.perf_counter()
    _, err = process.communicate(timeout=60)
    assert time.perf_counter() - start < 10 and "KeyboardInterrupt" in err
