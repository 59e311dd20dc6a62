import keras
import numpy as np
import pytest

from kit.backbones import BACKBONES
from kit.model import build_model, setup_device


@pytest.mark.parametrize("name", ["vgg16", "efficientnetb0", "dinov2_small"])  # a feature map, tokens
@pytest.mark.parametrize("task, classes, width",
                         [("binary", 2, 1), ("multiclass", 3, 3), ("multilabel", 4, 4)])
def test_the_head_is_sized_for_the_task(name, task, classes, width):
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

