"""The model and the devices it runs on.

raw 0-255 RGB -> the backbone's preprocess_input -> base(x, training=False) -> global average
pooling -> dropout -> dense head (sigmoid for binary and multilabel, softmax for multiclass).
"""
import functools
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

import keras
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops  # the gradient registry is not public

from kit.backbones import BACKBONES
from kit.pretrained import build_base


@keras.saving.register_keras_serializable(package="kit")
class Preprocess(keras.layers.Layer):
    """keras.applications' preprocess_input inside the model, so the model takes raw RGB."""

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, x):
        if self.mode == "none":  # backbones that rescale inside (EfficientNet, ConvNeXt)
            return x
        return keras.applications.imagenet_utils.preprocess_input(x, mode=self.mode)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="kit")
class InferenceMode(keras.layers.Layer):
    """Runs the pretrained base with training=False on every call.

    `base(x, training=False)` in a functional model is not enough in Keras 3: fit's outer
    training=True overrides it for nested models (keras-team/keras#20285), and unfrozen
    BatchNorm layers would then update their moving statistics. This layer's call takes no
    `training` argument, so Keras has nothing to override.
    """

    def __init__(self, base, **kwargs):
        super().__init__(**kwargs)
        self.base = base

    def call(self, x):
        return self.base(x, training=False)

    def compute_output_shape(self, input_shape):
        return self.base.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "base": keras.saving.serialize_keras_object(self.base)}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "base": keras.saving.deserialize_keras_object(config["base"])})


class Mixing(keras.Model):
    """The model, whose training batches are mixed first (MixUp or CutMix, Keras' layers) in the
    training step itself: on the device, never at validation or prediction. The mixing layer's
    random state is one of the model's variables, so a resumed run mixes as an uninterrupted one."""

    def __init__(self, inputs, outputs, mix, alpha, seed=None, **kwargs):
        super().__init__(inputs, outputs, **kwargs)
        self.mix, self.alpha = mix, alpha
        self.mixer = (keras.layers.MixUp(alpha=alpha, seed=seed) if mix == "mixup"
                      else keras.layers.CutMix(factor=alpha, seed=seed))

    def get_config(self):
        """The plain model's: what is saved is the model without its training-only mixing."""
        return keras.Model(self.inputs, self.outputs, name=self.name).get_config()

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y = keras.ops.cast(y, "float32")
        y = keras.ops.expand_dims(y, -1) if len(y.shape) == 1 else y  # binary: (n, 1) as the head
        mixed = self.mixer({"images": keras.ops.cast(x, "float32"), "labels": y}, training=True)
        return super().train_step((mixed["images"], mixed["labels"], sample_weight))


def build_model(backbone, task, n_classes, size, weights, dropout, mix=None):
    """(model, base). The base starts frozen; `pretrained.set_trainable` opens it as each phase's plan says.
    `mix`: ("mixup" | "cutmix", alpha, seed) mixes the training batches (Mixing)."""
    entry = BACKBONES[backbone]
    inputs = keras.Input((size, size, 3), name="image")
    x = Preprocess(entry.preprocess, dtype="float32", name="preprocess")(inputs)
    base = build_base(backbone, size, weights)
    base.trainable = False
    # BatchNorm stays in inference mode for good, even once its block is unfrozen: the moving
    # statistics of the pretrained base never move.
    x = InferenceMode(base, name="base")(x)
    pool = keras.layers.GlobalAveragePooling1D if entry.tokens else keras.layers.GlobalAveragePooling2D
    x = pool(name="pool")(x)  # a transformer's tokens, or a feature map
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = 1 if task == "binary" else n_classes
    activation = "softmax" if task == "multiclass" else "sigmoid"
    # The head computes in float32 under mixed precision: probabilities need the range.
    outputs = keras.layers.Dense(outputs, activation=activation, dtype="float32", name="head")(x)
    if mix:
        return Mixing(inputs, outputs, *mix, name=f"{backbone}_kit"), base
    return keras.Model(inputs, outputs, name=f"{backbone}_kit"), base


def accuracy_name(task):
    """What Keras' accuracy counts: the argmax (multiclass), or each output at 0.5 (binary,
    multilabel: per class, not per image)."""
    return "accuracy" if task == "multiclass" else "binary_accuracy"


def loss_and_accuracy(task, from_logits=False):
    """The plain loss (of its probabilities, or of its head's logits), and the accuracy reported
    beside it: what validation and early stopping always use."""
    name = accuracy_name(task)
    if task == "multiclass":
        return (keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                keras.metrics.SparseCategoricalAccuracy(name=name))
    return keras.losses.BinaryCrossentropy(from_logits=from_logits), keras.metrics.BinaryAccuracy(name=name)


@dataclass
class Objective:
    """What training minimises and how the optimizer steps: the spec's training options."""

    loss: str = "crossentropy"  # or focal
    label_smoothing: float = 0.0
    ema: float = 0.0  # momentum of the weights' moving average; 0: none
    accumulate: int = 1  # batches per optimizer step
    lr_factors: dict = field(default_factory=dict)  # variable path -> multiple of the phase's rate
    mixing: bool = False  # MixUp or CutMix: targets are mixed

    def one_hot(self, task):
        """Multiclass targets as one-hot rows: Keras' smoothing and focal losses take no class ids,
        and mixed targets are no class ids."""
        return task == "multiclass" and (self.loss == "focal" or self.label_smoothing > 0 or self.mixing)


def training_loss(task, objective):
    """(loss, accuracy) that a phase trains with."""
    if task == "multiclass" and not objective.one_hot(task):
        return loss_and_accuracy(task)
    focal = objective.loss == "focal"
    smooth = {"label_smoothing": objective.label_smoothing}
    if task == "multiclass":  # focal: (1 - p)^2 x cross-entropy as for binary (alpha: a scale Adam ignores)
        loss = (keras.losses.CategoricalFocalCrossentropy(alpha=1.0, **smooth) if focal
                else keras.losses.CategoricalCrossentropy(**smooth))
        return loss, keras.metrics.CategoricalAccuracy(name=accuracy_name(task))
    loss = keras.losses.BinaryFocalCrossentropy if focal else keras.losses.BinaryCrossentropy
    return loss(**smooth), keras.metrics.BinaryAccuracy(name=accuracy_name(task))


class LayerwiseAdam(keras.optimizers.Adam):
    """Adam with a learning rate per variable: the current rate (warm-up, decay and plateau set
    it as usual) times the variable's factor (discriminative fine-tuning: lower blocks slower)."""

    def __init__(self, learning_rate, factors, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.factors = factors

    def build(self, var_list):
        super().build(var_list)
        self._factor_of = [self.factors.get(v.path, 1.0) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factor_of[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate * factor)


def compile_model(model, task, lr, jit_compile, optimizer=None, objective=None):
    """A fresh optimizer per phase (keras only sees a new `trainable` set on compile), or the
    full model's own when compiling its head alone (cached features)."""
    objective = objective or Objective()
    loss, accuracy = training_loss(task, objective)
    if optimizer is None:
        options = {"use_ema": objective.ema > 0, "ema_momentum": objective.ema or 0.99,
                   "gradient_accumulation_steps": objective.accumulate if objective.accumulate > 1 else None}
        optimizer = (LayerwiseAdam(lr, objective.lr_factors, **options) if objective.lr_factors
                     else keras.optimizers.Adam(lr, **options))
    model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy], jit_compile=jit_compile)


@dataclass
class Device:
    strategy: tf.distribute.Strategy
    accelerator: str  # tpu | gpu | cpu
    policy: str  # keras dtype policy for the base
    jit_compile: bool


def setup_device(strategy="auto", mixed_precision="auto", jit_compile="auto", mixing=False):
    """The distribution strategy (TPU, several GPUs -> mirrored, else default), mixed precision
    and XLA: on by default with an accelerator, off on a CPU and with MixUp/CutMix (XLA has no
    kernel for their beta draws)."""
    gpus = tf.config.list_logical_devices("GPU")
    if strategy == "auto" and _has_tpu():
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver.connect()
        chosen, accelerator = tf.distribute.TPUStrategy(resolver), "tpu"
    elif strategy == "mirrored" or (strategy == "auto" and len(gpus) > 1):
        devices = gpus or tf.config.list_logical_devices("CPU")
        chosen = tf.distribute.MirroredStrategy([d.name for d in devices])
        accelerator = "gpu" if gpus else "cpu"
    else:
        chosen, accelerator = tf.distribute.get_strategy(), "gpu" if gpus else "cpu"
    if mixed_precision == "auto":
        mixed_precision = {"tpu": "bfloat16", "gpu": "float16", "cpu": "off"}[accelerator]
    policy = "float32" if mixed_precision == "off" else f"mixed_{mixed_precision}"
    jit = accelerator != "cpu" and not mixing if jit_compile == "auto" else jit_compile == "on"
    return Device(chosen, accelerator, policy, jit)


def _has_tpu():
    # Asking TF's resolver on a machine without a TPU may wait on a cloud metadata server.
    named = os.environ.get("TPU_NAME") or os.environ.get("TPU_ACCELERATOR_TYPE")
    return bool(named) or os.path.exists("/dev/accel0")


@contextmanager
def released():
    """Everything kept of the models built in the block, released when it ends, failed or not:
    Keras' session, and the gradient functions TensorFlow registers for good each time a traced
    training step all-reduces its gradients (they hold the step's graph and, through it, the
    model's variables: about a model's worth of memory per run, never freed otherwise)."""
    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", {})
    before = set(registry)
    try:
        yield
    finally:
        for key in [k for k in registry if k not in before and k.startswith("CustomGradient-")]:
            del registry[key]
        keras.backend.clear_session()  # and a garbage collection


def releasing(run):
    """`run` inside released(): what it built is gone once it returns."""
    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        with released():
            return run(*args, **kwargs)
    return wrapper
