"""The pretrained base of a model: built from keras.applications or keras-hub as its registry
entry says (kit/backbones.py), with its ImageNet weights or one line saying what to attach; and
the layers of it that a phase opens."""
import logging
import warnings
import zipfile

import keras

from kit import KitError
from kit.backbones import BACKBONES
from kit.env import missing_weights

# Two harmless warnings of keras-hub backbones, printed on every call otherwise: their input is
# named (a dict of one) where the kit passes a tensor; Swin's attention ignores a mask it is given.
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match", category=UserWarning)
warnings.filterwarnings("ignore", message="Layer 'attn' .* does not support masking", category=UserWarning)


def build_base(backbone, size, weights):
    """The base at `size` px: weights "imagenet", None (random init) or a weights file (a preset
    folder for a keras-hub backbone)."""
    entry = BACKBONES[backbone]
    try:
        if entry.hub:
            return _hub(entry, size, weights)
        return getattr(keras.applications, entry.constructor)(
            include_top=False, weights=weights, input_shape=(size, size, 3))
    except ValueError as e:  # e.g. a weights file made for another architecture
        first = str(e).splitlines()[0]
        raise KitError(f"{backbone}: cannot build with weights={weights!r}: {first}") from None
    except Exception as e:  # keras.utils.get_file: "URL fetch failure on ..."; kagglehub: no network
        if weights == "imagenet" and not isinstance(e, KitError):
            raise KitError(missing_weights(backbone, entry, str(e) or type(e).__name__)) from None
        raise


def _hub(entry, size, weights):
    import keras_hub  # only for its backbones: a second or two to import

    cls = getattr(keras_hub.models, entry.constructor)
    if weights is None:
        return cls(**entry.config, image_shape=(size, size, 3))
    source = entry.preset if weights == "imagenet" else str(weights)
    # Offline, the Kaggle clients' warnings would bury the one line that says what to attach.
    logs = [logging.getLogger(name) for name in ("kagglehub", "kagglesdk")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        return cls.from_preset(source, image_shape=(size, size, 3))
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def load_model(path):
    """A saved model.keras, keras-hub's classes registered first when it holds one of them."""
    with zipfile.ZipFile(path) as saved:
        if "keras_hub" in saved.read("config.json").decode():
            import keras_hub  # noqa: F401
    return keras.saving.load_model(path)


def trainable_layers(base, blocks, trainable):
    """The layers of the base that a phase trains: none, those of the last K registry blocks
    (and everything after them), or all. A block in a sublayer gives its container's later
    sublayers, then the base's later layers."""
    if trainable == "none":
        return []
    if trainable == "all":
        return list(base.layers)
    k = int(trainable.split(":")[1])
    if k > len(blocks):
        raise KitError(f"trainable {trainable}: {base.name} has {len(blocks)} blocks")
    block = blocks[-k]
    if "/" in block:
        outer, inner = block.split("/")
        container = base.layers[_start(base.layers, outer, exact=True)]
        inside = _children(container)
        return inside[_start(inside, inner, exact=True):] + base.layers[base.layers.index(container) + 1:]
    if block.startswith("after:"):
        return base.layers[_start(base.layers, block[6:], exact=True) + 1:]
    return base.layers[_start(base.layers, block):]


def _start(layers, block, exact=False):
    """The index of the first layer the block names: its name, or the start of it unless
    `exact`. A keras-hub backbone loaded from a preset prefixes its layers' names with its own."""
    return next(i for i, layer in enumerate(layers) if layer.name.endswith(f"_{block}") or (
        layer.name == block if exact else layer.name.startswith(block)))


def set_trainable(base, blocks, trainable):
    """Freeze the base except what the phase trains. The model must be compiled afterwards."""
    opened = {id(layer) for layer in trainable_layers(base, blocks, trainable)}
    base.trainable = bool(opened)
    for layer in base.layers:
        _open(layer, opened)


def _open(layer, opened):
    """Train `layer` if opened; a container, only the sublayers opened inside it."""
    if id(layer) in opened or not _children(layer):
        layer.trainable = id(layer) in opened
        return
    inside = [child for child in _children(layer) if _holds(child, opened)]
    layer.trainable = bool(inside)  # a container's trainable flag sets all of its sublayers' ...
    for child in _children(layer):
        _open(child, opened)  # ... which are then set one by one


def _holds(layer, opened):
    return id(layer) in opened or any(_holds(child, opened) for child in _children(layer))


def _children(layer):
    return list(layer._flatten_layers(include_self=False, recursive=False))


def describe(backbone):
    """One line of `make backbones`: default and minimum size, blocks, parameters (counted on a
    random-init base at its own size), where the pretrained weights come from."""
    entry = BACKBONES[backbone]
    params = build_base(backbone, entry.size, None).count_params()
    keras.backend.clear_session()
    if entry.hub:
        source = f"Kaggle Model {entry.preset.removeprefix('kaggle://')} (keras-hub)"
    else:
        source = f"keras.applications {entry.weights_file}"
    sizes = f"{entry.size}" + ("!" if entry.fixed else "") + (f"/{entry.step}" if entry.step > 1 else "")
    return (f"{backbone:20s} {sizes:>8s} {entry.min_size:5d} {len(entry.blocks):6d} {params / 1e6:8.1f}M  "
            f"{source}")
