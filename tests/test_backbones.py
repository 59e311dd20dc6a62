"""The registry: every entry builds without weights at its minimum size, takes raw RGB through the
preprocessing its Keras family documents, names the weights file Keras asks for, and opens exactly
its last K stages with top:K (a training step moves those weights and no other, BatchNorm
statistics included). One backbone per family runs in `make test-fast`; the rest are slow."""
import importlib

import keras
import numpy as np
import pandas as pd
import pytest
from packaging.version import Version

from kit import KitError
from kit.backbones import BACKBONES
from kit.model import Preprocess, build_model, compile_model
from kit.pretrained import build_base, set_trainable, trainable_layers
from kit.runtime import version

FAMILY_FIRSTS = {"vgg16", "resnet50", "xception", "efficientnetb0", "efficientnetv2b0", "convnext_tiny",
                 "densenet121", "resnet50v2", "mobilenetv3small", "inceptionv3", "dinov2_small"}


def registry(names=BACKBONES, fast=FAMILY_FIRSTS):
    """The entries as test parameters: the slow ones marked; one whose keras-hub class the
    installed keras-hub lacks (Swin on Kaggle's image: its kernels install keras-hub from the
    wheels dataset, tested in test_runtime.py) skipped, saying so."""
    hub = Version(version("keras-hub") or "0")
    return [pytest.param(n, marks=[*(() if n in fast else [pytest.mark.slow]), *(
        [pytest.mark.skip(reason=f"keras-hub {hub} lacks {BACKBONES[n].constructor} (new in {BACKBONES[n].hub_version})")]
        if BACKBONES[n].hub_version and hub < Version(BACKBONES[n].hub_version) else [])]) for n in names]


def _family(entry):
    """keras.applications.<family>, the module whose preprocess_input documents the entry's."""
    module = getattr(keras.applications, entry.constructor).__module__.rsplit(".", 1)[1]
    return importlib.import_module(f"keras.applications.{module}")


@pytest.mark.parametrize("name", [n for n, e in BACKBONES.items() if not e.hub])
def test_preprocessing_is_the_one_keras_documents_for_the_family(name):
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    ours = keras.ops.convert_to_numpy(Preprocess(BACKBONES[name].preprocess)(x))
    np.testing.assert_allclose(ours, _family(BACKBONES[name]).preprocess_input(x.copy()), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", registry([n for n, e in BACKBONES.items() if not e.hub]))
def test_the_offline_weights_file_is_the_one_keras_downloads(name, monkeypatch):
    from keras.src.utils import file_utils

    asked = []

    def get_file(fname=None, origin=None, **kwargs):
        asked.append(fname)
        raise RuntimeError("no download here")

    monkeypatch.setattr(file_utils, "get_file", get_file)
    entry = BACKBONES[name]
    with pytest.raises(RuntimeError):
        getattr(keras.applications, entry.constructor)(
            include_top=False, weights="imagenet", input_shape=(entry.size, entry.size, 3))
    assert asked == [entry.weights_file]


def _fed_by(layer):
    """The names of every layer fed, directly or not, by `layer` (walks the Keras graph)."""
    seen, todo = set(), [layer]
    while todo:
        for node in todo.pop()._outbound_nodes:
            if node.operation.name not in seen:
                seen.add(node.operation.name)
                todo.append(node.operation)
    return seen


@pytest.mark.registry
@pytest.mark.parametrize("name", registry())
def test_top_k_opens_the_last_k_stages_and_nothing_below(name):
    entry = BACKBONES[name]
    base = build_base(name, entry.min_size, None)
    opened = [trainable_layers(base, entry.blocks, f"top:{k}") for k in range(1, len(entry.blocks) + 1)]
    for k, layers in enumerate(opened, 1):
        block = entry.blocks[-k]
        if "/" in block:  # a transformer's block: that block of its container, the later ones, the rest
            outer, inner = block.split("/")
            container = next(layer for layer in base.layers if layer.name.endswith(outer))
            blocks = [layer.name for layer in container._flatten_layers(include_self=False, recursive=False)]
            inner = next(name for name in inner.split("|") if name in blocks)  # the name this keras-hub has
            assert [layer.name for layer in layers] == blocks[blocks.index(inner):] + [
                layer.name for layer in base.layers[base.layers.index(container) + 1:]]
            continue
        if block.startswith("after:"):  # the stage starts after the named layer, which stays frozen
            below = base.get_layer(block[6:])
            assert below not in layers
        else:
            first = next(layer for layer in base.layers if layer.name.startswith(block))
            parents = first._inbound_nodes[0].parent_nodes
            assert len(parents) == 1, f"{block} starts inside a stage: it has {len(parents)} inputs"
            below = parents[0].operation
        weighted = {layer.name for layer in base.layers if layer.weights} & _fed_by(below)
        assert {layer.name for layer in layers if layer.weights} == weighted, f"top:{k}"
    sizes = [len(layers) for layers in opened]
    assert all(a < b for a, b in zip(sizes, sizes[1:])) or any("/" in b for b in entry.blocks)
    with pytest.raises(KitError, match=f"has {len(entry.blocks)} blocks"):
        trainable_layers(base, entry.blocks, f"top:{len(entry.blocks) + 1}")


@pytest.mark.parametrize("name", registry(["efficientnetb0", "dinov2_small", "vit_b16", "swin_tiny"],
                                          fast={"efficientnetb0", "dinov2_small"}))
def test_what_a_phase_opens_does_not_depend_on_the_phases_before_it(name):
    entry = BACKBONES[name]
    base = build_base(name, entry.min_size, None)

    def opened(*sequence):
        for trainable in sequence:
            set_trainable(base, entry.blocks, trainable)
        return sorted(v.path for v in base.trainable_weights)

    fresh = {t: opened(t) for t in ("none", "top:1", "top:2", "all")}
    every = sorted(v.path for v in base.weights if v.trainable)  # the variables' own flag: not BN statistics
    assert opened("top:1", "all") == opened("none", "top:2", "all") == fresh["all"] == every
    assert opened("all", "top:1") == opened("top:2", "top:1") == fresh["top:1"]
    assert opened("all", "none") == fresh["none"] == []
    assert len(fresh["top:1"]) < len(fresh["top:2"]) < len(fresh["all"])


def _values(variables):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in variables}


@pytest.mark.parametrize("name", registry(["efficientnetb0", "dinov2_small", "vit_b16", "swin_tiny"],
                                          fast={"dinov2_small"}))
def test_a_step_moves_the_opened_stages_only_and_no_batchnorm_statistics(name):
    """Raw 0-255 RGB in; after set_trainable(top:2) a step changes the weights of the last two
    stages (and the head) and nothing else of the base: frozen stages, BatchNorm moving statistics."""
    keras.utils.set_random_seed(0)
    entry = BACKBONES[name]
    model, base = build_model(name, "binary", 2, entry.min_size, None, 0.0)
    set_trainable(base, entry.blocks, "top:2")
    compile_model(model, "binary", 1e-2, False)
    opened = {v.path for layer in trainable_layers(base, entry.blocks, "top:2") for v in layer.trainable_weights}
    assert opened and {v.path for v in base.trainable_weights} == opened
    before = _values(base.weights)
    x = np.random.default_rng(0).uniform(0, 255, (4, entry.min_size, entry.min_size, 3)).astype("float32")
    model.train_on_batch(x, np.array([0, 1, 0, 1], "float32"))
    after = _values(base.weights)
    moved = {path for path in before if not np.array_equal(before[path], after[path])}
    assert moved == opened
    statistics = [v.path for v in base.weights if "moving_" in v.path]
    assert bool(statistics) == (name == "efficientnetb0")
    assert not moved & set(statistics)


@pytest.mark.parametrize("name", registry(["dinov2_small", "vit_b16", "swin_tiny"]))
def test_a_keras_hub_backbone_loads_from_a_local_preset_folder(name, tmp_path):
    """The offline path of weights: imagenet in a kernel: the attached preset folder."""
    entry = BACKBONES[name]
    keras.utils.set_random_seed(1)
    saved = build_base(name, entry.min_size, None)
    saved.save_to_preset(str(tmp_path / "preset"))
    keras.utils.set_random_seed(2)
    loaded = build_base(name, entry.min_size, str(tmp_path / "preset"))
    for a, b in zip(saved.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_keras_hub_backbone_trains_a_fold_from_its_preset_and_its_model_predicts_again(tiny, tmp_path):
    """The same schedule as any backbone (head, then top:1): the size rounded to its patches,
    tokens pooled, the saved model reloaded (keras-hub's classes) for the same test predictions."""
    from kit.decode import read_rgb
    from kit.pretrained import load_model
    from kit.train import run_fold

    build_base("dinov2_small", 28, None).save_to_preset(str(tmp_path / "preset"))
    spec = tiny(weights=str(tmp_path / "preset"), image_size=32)
    out = run_fold(spec, "dinov2_small", 0)
    history = pd.read_csv(out / "history.csv")
    assert history["phase"].tolist() == ["head", "finetune"]
    model = load_model(out / "model.keras")
    assert model.input_shape == (None, 42, 42, 3)  # 32 rounded up to 14-pixel patches
    test = pd.read_csv(out / "test.csv")
    x = np.stack([read_rgb(p, 42) for p in sorted((spec.data_path / "test").iterdir())]).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), test[["a", "b"]].to_numpy(), atol=1e-5)
