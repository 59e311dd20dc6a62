"""Fine-tuning on the frozen prefix's cached outputs trains what end to end trains."""
import dataclasses
import shutil

import keras
import numpy as np
import pandas as pd
import pytest

import kit.features
from kit import KitError
from kit.backbones import BACKBONES
from kit.env import cores
from kit.model import build_model
from kit.prefix import cut, prefix_of, suffix_of
from kit.pretrained import set_trainable
from kit.train import run_fold
from tests.test_backbones import registry

SCHEDULE = [{"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-3, "patience": 0},
            {"name": "finetune", "trainable": "top:1", "epochs": 2, "lr": 1e-3, "patience": 0}]


@pytest.mark.registry
@pytest.mark.parametrize("backbone", registry())
def test_the_cut_is_below_the_opened_blocks_and_prefix_then_suffix_is_the_model(backbone):
    """Every registry entry, top:1 to top:3 (what the tests and the bench open), on each keras the
    kit supports (make test-kaggle runs it on Kaggle's): bases whose blocks read more than a chain
    (Xception's residual adds, Inception's pooling branch, DenseNet's concat, MobileNetV3's
    squeeze-excite, ConvNeXt's plain add operations), and a transformer's encoder."""
    entry = BACKBONES[backbone]
    size = max(entry.min_size, -(-96 // entry.step) * entry.step)
    model, base = build_model(backbone, "multiclass", 3, size, None, 0.0)
    assert cut(base) is None  # frozen: nothing to cut
    x = np.random.default_rng(0).uniform(0, 255, (3, size, size, 3)).astype(np.float32)
    whole = keras.ops.convert_to_numpy(model(x))  # called eagerly: tracing 800-layer graphs costs more
    for k in (1, 2, 3):  # the bench opens 1 and 2; the tests' progressive phases up to 3
        set_trainable(base, entry.blocks, f"top:{k}")
        tensor = cut(base)
        trained, _ = suffix_of(model, base, tensor)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(trained(prefix_of(model, base, tensor)(x))), whole,
                                   atol=1e-5)
        opened = trained.get_layer("opened").base
        assert not [layer.name for layer in opened.layers if layer.weights and not layer.trainable]  # all of it trains
        assert {layer.name for layer in base.layers if layer.weights and layer.trainable} <= {
            layer.name for layer in opened.layers}
    set_trainable(base, entry.blocks, "all")
    assert cut(base) is None  # everything trains: nothing to cache


def _plan(spec, base, trainable, augment=()):
    """The plan of a schedule of one phase opening `trainable` (kit/plan.py)."""
    from kit.augment import Augmenter, serialized
    from kit.config import Phase
    from kit.plan import schedule_plans
    spec = dataclasses.replace(spec, schedule=[Phase("f", trainable, epochs=1)])
    [[plan]] = schedule_plans(spec, base, BACKBONES["vgg16"].blocks, Augmenter(serialized(list(augment))))
    return plan


def test_prefix_cache_on_says_why_a_top_k_phase_trains_end_to_end(tiny):
    model, base = build_model("vgg16", "multiclass", 3, 32, None, 0.0)
    spec = tiny(prefix_cache="on")
    assert _plan(spec, base, "top:1").why is None and _plan(spec, base, "top:1").source == "prefix"  # it is cached
    assert _plan(tiny(prefix_cache="on", mixup=0.2), base, "top:1").why == "mixup and cutmix mix the images of each step"
    assert _plan(tiny(prefix_cache="auto", mixup=0.2), base, "top:1").why is None  # not asked for: nothing to say
    assert _plan(spec, base, "top:5").why == "top:5 leaves nothing frozen below it"
    assert _plan(spec, base, "all").why is None and _plan(spec, base, "none").source == "head"


@pytest.mark.slow
def test_a_top1_phase_on_the_cached_prefix_matches_end_to_end_and_batchnorm_never_moves(tiny, tmp_path, capsys):
    predictions = {}
    for how in ("on", "off"):
        spec = tiny(backbones=["resnet50"], augment=[], schedule=SCHEDULE, prefix_cache=how,
                    runs_dir=str(tmp_path / f"runs-{how}"), workers=64)
        run_fold(spec, "resnet50", 0)
        run = spec.runs_path / "resnet50" / "fold0"
        predictions[how] = pd.read_csv(run / "test.csv").iloc[:, 1:].to_numpy(float)
        history = pd.read_csv(run / "history.csv")
        model = keras.saving.load_model(run / "model.keras")
        for layer in model.get_layer("base").base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):  # random init: 0 and 1 for good
                np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.moving_mean), 0)
                np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.moving_variance), 1)
        out = capsys.readouterr().out
        assert out.count(f"workers 64: this machine has {cores()} cores, {cores()} threads used") == 1
        if how == "on":
            phase_line = out.index("on the frozen prefix's cached outputs")
            assert phase_line < out.index("frozen prefix: ") < out.index("fold 0 ")  # in the order they happen
            cached_history = history
    np.testing.assert_allclose(predictions["on"], predictions["off"], atol=1e-4)
    np.testing.assert_allclose(cached_history["val_loss"], history["val_loss"], rtol=1e-4)


def test_cached_outputs_the_disk_cannot_hold_go_to_memory_and_fitting_neither_is_one_line_before_any_work(
        tiny, monkeypatch):
    spec = tiny(augment=[], schedule=SCHEDULE, cache_mb=0)
    monkeypatch.setattr(kit.features.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10, 10, 1000))
    monkeypatch.setattr(kit.features, "available_memory", lambda: 1000)
    with pytest.raises(KitError, match=r"the cached outputs need .* and .*cache has 1.0 KiB free \(memory: 1.0 KiB\)"):
        run_fold(spec, "vgg16", 0)
    assert not (spec.runs_path / "vgg16" / "fold0" / "history.csv").exists()
    monkeypatch.undo()
    monkeypatch.setattr(kit.features.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10, 10, 1000))
    log = (run_fold(spec, "vgg16", 0) / "log.txt").read_text()  # the disk is short, the memory is not
    assert "head features: " in log and "frozen prefix: " in log and "view(s), on disk" not in log
    assert log.count("view(s), in memory") == 2


def test_the_prefix_cache_is_on_by_default_only_where_it_is_honest(tiny):
    model, base = build_model("vgg16", "binary", 2, 32, None, 0.0)
    flips = [{"HorizontalFlip": {}}]
    assert _plan(tiny(), base, "top:1", flips).source is None  # augmented each epoch: end to end
    assert _plan(tiny(feature_copies=2), base, "top:1", flips).source == "prefix"  # through cached copies
    assert _plan(tiny(), base, "top:1").source == "prefix"
    assert _plan(tiny(prefix_cache="on"), base, "top:1", flips).source == "prefix"
    assert _plan(tiny(augment=[], mixup=0.2), base, "top:1").source is None  # mixed images
    assert _plan(tiny(prefix_cache="off"), base, "top:1").source is None
    plan = _plan(tiny(), base, "top:1")
    set_trainable(base, BACKBONES["vgg16"].blocks, "top:1")
    assert plan.cut is cut(base) and plan.factors == {}  # the cut, found once when planned
