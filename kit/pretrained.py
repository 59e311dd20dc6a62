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

# Harmless warnings of keras-hub backbones, printed on every call otherwise: their input is named
# (a dict of one) where the kit passes a tensor; Swin's attention ignores a mask it is given;
# DINOv2's mask token (for masked pre-training) gets no gradient when fine-tuned.
for message in ("The structure of `inputs` doesn't match", "Layer 'attn' .* does not support masking",
                "Gradients do not exist for variables .*mask_token"):
    warnings.filterwarnings("ignore", message=message, category=UserWarning)


def build_base(backbone, size, weights):
    """The base at `size` px: weights "imagenet", None (random init) or a weights file (a preset
    folder for a keras-hub backbone)."""
    entry = BACKBONES[backbone]
    try:
        if entry.hub:
            return _hub(backbone, entry, size, weights)
        return getattr(keras.applications, entry.constructor)(
            include_top=False, weights=weights, input_shape=(size, size, 3))
    except ValueError as e:  # e.g. a weights file made for another architecture
        first = str(e).splitlines()[0]
        raise KitError(f"{backbone}: cannot build with weights={weights!r}: {first}") from None
    except Exception as e:  # keras.utils.get_file: "URL fetch failure on ..."; kagglehub: no network
        if weights == "imagenet" and not isinstance(e, KitError):
            raise KitError(missing_weights(backbone, entry, str(e) or type(e).__name__)) from None
        raise


def _hub(backbone, entry, size, weights):
    import keras_hub  # only for its backbones: a second or two to import

    cls = getattr(keras_hub.models, entry.constructor, None)
    if cls is None:  # Kaggle's image: keras-hub 0.26 has no Swin
        new, have = entry.hub_version, keras_hub.__version__
        raise KitError(f"{backbone}: keras_hub.models.{entry.constructor} is new in keras-hub {new}; this "
                       f"Python has {have}: pip install 'keras-hub>={new}' (a kernel installs it from the "
                       f"wheels dataset: make wheels)")
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
    if "keras_hub" in check_saved(path):
        import keras_hub  # noqa: F401
    return keras.saving.load_model(path)


def check_saved(path):
    """The config of a saved model.keras, or one line if the file is damaged (cut short, or
    overwritten: each member's CRC is checked)."""
    try:
        with zipfile.ZipFile(path) as saved:
            config, damaged = saved.read("config.json").decode(), saved.testzip()
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError) as e:
        config, damaged = "", str(e)
    if damaged:
        raise KitError(f"{path} is damaged ({damaged}): train its fold again (force=1), or copy it again")
    return config


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
    `exact`. A keras-hub backbone loaded from a preset prefixes its layers' names with its own;
    "a|b": either name (keras-hub renamed layers between releases)."""
    for name in block.split("|"):
        found = next((i for i, layer in enumerate(layers) if layer.name.endswith(f"_{name}") or (
            layer.name == name if exact else layer.name.startswith(name))), None)
        if found is not None:
            return found
    raise KitError(f"no layer {block!r} in this backbone: its registry entry's blocks (kit/backbones.py) do "
                   f"not fit this keras or keras-hub")


def set_trainable(base, blocks, trainable):
    """Freeze the base except what the phase trains. The model must be compiled afterwards."""
    opened = {id(layer) for layer in trainable_layers(base, blocks, trainable)}
    base.trainable = bool(opened)
    for layer in base.layers:
        _open(layer, opened)


def block_factors(base, blocks, trainable, lr_mult):
    """{variable path: lr_mult ** d} of the opened weights, d the distance of the variable's block
    from the top block (0 for the top one; the layers below the first block count as one more)."""
    if lr_mult == 1 or trainable == "none":
        return {}
    n = len(blocks) if trainable == "all" else int(trainable.split(":")[1])
    factors = {}
    for k in range(1, n + 1):  # top:k opens block k's layers and those above, already counted
        for layer in trainable_layers(base, blocks, f"top:{k}"):
            for variable in layer.weights:
                factors.setdefault(variable.path, lr_mult ** (k - 1))
    if trainable == "all":
        for variable in base.weights:
            factors.setdefault(variable.path, lr_mult ** n)
    return factors


def _open(layer, opened):
    """Train `layer` and all inside it if opened; a container, only the sublayers opened inside
    it. Every flag is set explicitly: a container's flag does not reach sublayers that an earlier
    phase set one by one (a transformer's blocks after top:K)."""
    inside = _children(layer)
    if id(layer) in opened:
        opened = opened | {id(child) for child in inside}
    layer.trainable = _holds(layer, opened)
    for child in inside:
        _open(child, opened)


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
