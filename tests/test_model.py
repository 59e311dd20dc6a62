import keras
import numpy as np
import pytest

from kit.backbones import BACKBONES
from kit.model import Preprocess, build_model, setup_device, trainable_layers

KERAS_PREPROCESS = {
    "vgg16": keras.applications.vgg16.preprocess_input,
    "resnet50": keras.applications.resnet50.preprocess_input,
    "xception": keras.applications.xception.preprocess_input,
}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_model_takes_raw_rgb_through_the_backbones_own_preprocessing(name):
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    ours = keras.ops.convert_to_numpy(Preprocess(BACKBONES[name].preprocess)(x))
    np.testing.assert_allclose(ours, KERAS_PREPROCESS[name](x.copy()), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("task, classes, width",
                         [("binary", 2, 1), ("multiclass", 3, 3), ("multilabel", 4, 4)])
def test_every_backbone_builds_a_head_sized_for_the_task(name, task, classes, width):
    size = BACKBONES[name].min_size
    model, base = build_model(name, task, classes, size, None, 0.2)
    out = model.predict(np.full((2, size, size, 3), 128, np.float32), verbose=0)
    assert out.shape == (2, width)
    assert not base.trainable and (out >= 0).all() and (out <= 1).all()
    if task == "multiclass":
        np.testing.assert_allclose(out.sum(1), 1, rtol=1e-5)
    layers = [layer.name for layer in model.layers]
    assert layers == ["image", "preprocess", "base", "pool", "dropout", "head"]
    assert model.get_layer("base").base is base


def _downstream(layer):
    """Every layer fed, directly or not, by `layer` (walks the keras graph)."""
    seen, todo = set(), [layer]
    while todo:
        for node in todo.pop()._outbound_nodes:
            if node.operation.name not in seen:
                seen.add(node.operation.name)
                todo.append(node.operation)
    return seen


@pytest.mark.parametrize("name", list(BACKBONES))
def test_top_k_opens_exactly_the_layers_above_the_kth_block_from_the_top(name):
    entry = BACKBONES[name]
    _, base = build_model(name, "binary", 2, entry.min_size, None, 0.0)
    for k in (1, 2, len(entry.blocks)):
        first = next(layer for layer in base.layers if layer.name.startswith(entry.blocks[-k]))
        below = first._inbound_nodes[0].parent_nodes[0].operation  # the output of the block below
        expected = _downstream(below)
        assert {layer.name for layer in trainable_layers(base, entry.blocks, f"top:{k}")} == expected
    assert trainable_layers(base, entry.blocks, "none") == []
    assert len(trainable_layers(base, entry.blocks, "all")) == len(base.layers)


def test_top_k_beyond_the_backbone_is_an_error():
    from kit import KitError

    _, base = build_model("vgg16", "binary", 2, 32, None, 0.0)
    with pytest.raises(KitError, match="trainable top:6: vgg16 has 5 blocks"):
        trainable_layers(base, BACKBONES["vgg16"].blocks, "top:6")


def test_weights_from_a_local_file(tmp_path):
    keras.utils.set_random_seed(1)
    _, base = build_model("resnet50", "binary", 2, 32, None, 0.0)
    base.save_weights(tmp_path / "resnet50_notop.weights.h5")
    keras.utils.set_random_seed(2)
    _, loaded = build_model("resnet50", "binary", 2, 32, str(tmp_path / "resnet50_notop.weights.h5"), 0.0)
    for a, b in zip(base.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize("source", ["vgg16", "xception"])
def test_weights_made_for_another_backbone_fail_clearly(tmp_path, source):
    from kit import KitError

    _, base = build_model(source, "binary", 2, 71, None, 0.0)
    base.save_weights(tmp_path / "other.weights.h5")
    with pytest.raises(KitError, match="resnet50: cannot build with weights="):
        build_model("resnet50", "binary", 2, 71, str(tmp_path / "other.weights.h5"), 0.0)


def test_on_a_cpu_there_is_no_mixed_precision_or_xla_unless_asked():
    device = setup_device()
    assert (device.accelerator, device.policy, device.jit_compile) == ("cpu", "float32", False)
    assert device.strategy.num_replicas_in_sync == 1
    forced = setup_device("default", "bfloat16", "on")
    assert (forced.policy, forced.jit_compile) == ("mixed_bfloat16", True)

