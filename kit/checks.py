"""What a spec must hold beyond its types: choices, ranges, names that exist (a backbone, a
metric for the task), the training options that go together. One line per mistake."""
import difflib
import re
from pathlib import Path

from kit import KitError
from kit.augment import serialized
from kit.backbones import BACKBONES
from kit.metrics import METRICS
from kit.postprocess import check as check_postprocess

IMAGE_FORMS = ("files", "pixels", "parquet", "tfrecord", "hdf5", "numpy")
CHOICES = {
    "source": ("kaggle", "synthetic"),
    "layout": ("csv", "folders", "filename", "records", "long"),
    "image_form": IMAGE_FORMS,
    "test_image_form": ("", *IMAGE_FORMS),
    "test_ids": ("sample_submission", "folder"),
    "task": ("binary", "multiclass", "multilabel"),
    "metric": tuple(METRICS),
    "mixed_precision": ("auto", "off", "float16", "bfloat16"),
    "jit_compile": ("auto", "on", "off"),
    "strategy": ("auto", "default", "mirrored"),
    "decay": ("constant", "cosine", "plateau"),
    "submission": ("auto", "probability", "label", "per_class", "labels", "long"),
    "image_cache": ("auto", "memory", "disk", "off"),
    "prefix_cache": ("auto", "on", "off"),
    "postprocess": ("auto", "on", "off"),
    "loss": ("crossentropy", "focal"),
    "class_weight": ("none", "balanced"),
}


def validate(spec):
    """Checks that need more than a type: choices, ranges, names that must exist."""
    if spec.metric == "":  # make init could not tell it
        raise KitError(f"metric: not set: give {spec.slug}'s (one of {', '.join(METRICS)}) in its spec or as "
                       f"metric=")
    for key, allowed in CHOICES.items():
        values = [getattr(p, key) for p in spec.schedule] if key == "decay" else [getattr(spec, key)]
        for value in values:
            if value not in allowed:
                shown = ", ".join(repr(a) if a == "" else a for a in allowed)
                raise KitError(f"{key}: {value!r} is not one of {shown}"
                               f"{suggest(str(value), [a for a in allowed if a])}")
    if not spec.backbones:
        raise KitError("backbones: none listed (make backbones lists the ones to choose from)")
    for name in spec.backbones:
        check_backbone(name)
    if spec.task not in METRICS[spec.metric].tasks:
        raise KitError(f"metric: {spec.metric} does not apply to a {spec.task} task")
    for key, low in (("n_folds", 2), ("batch_size", 1), ("limit_batches", 0), ("workers", 0),
                     ("feature_copies", 0), ("cache_mb", 0), ("min_labels", 0), ("max_labels", 0)):
        if getattr(spec, key) < low:
            raise KitError(f"{key}: {getattr(spec, key)} is below {low}")
    for key, size in [("image_size", spec.image_size), *(("image_sizes", s) for s in spec.image_sizes)]:
        if size is not None and size < 8:
            raise KitError(f"{key}: {size} is too small (8 at least; each backbone has its own minimum)")
    for key in ("backbones", "seeds", "image_sizes"):
        values = getattr(spec, key)
        if len(set(values)) != len(values):
            twice = next(v for v in values if values.count(v) > 1)
            raise KitError(f"{key}: {twice} is listed twice")
    _validate_forms(spec)
    if spec.pseudo and not Path(spec.pseudo).is_file():
        raise KitError(f"pseudo: no pseudo-labels at {spec.pseudo} (make pseudo writes them)")
    if not 0.5 <= spec.pseudo_threshold < 1:
        raise KitError(f"pseudo_threshold: {spec.pseudo_threshold} is not in [0.5, 1)")
    for key in ("dropout", "threshold", "clip", "label_smoothing", "ema"):
        if not 0 <= getattr(spec, key) < 1:
            raise KitError(f"{key}: {getattr(spec, key)} is not in [0, 1)")
    if not set(spec.tta) <= {"hflip", "vflip"} or spec.tta_augment < 0:
        raise KitError(f"tta: {spec.tta} must list hflip and/or vflip; tta_augment >= 0")
    if spec.weights not in (None, "imagenet") and not Path(spec.weights).exists():
        raise KitError(f"weights: no weights file at {spec.weights} (use imagenet, null, a weights file "
                       f"or a keras-hub preset folder)")
    try:
        if re.compile(spec.label_regex).groups < 1:
            raise KitError(f"label_regex: {spec.label_regex!r} needs a (group) around the label")
    except re.error as e:
        raise KitError(f"label_regex: {spec.label_regex!r} is not a regular expression ({e})") from None
    if spec.max_labels and spec.max_labels < spec.min_labels:
        raise KitError(f"max_labels: {spec.max_labels} is below min_labels {spec.min_labels}")
    check_postprocess(spec)
    _validate_training(spec)
    _validate_schedule(spec.schedule)
    serialized(spec.augment)


def _validate_training(spec):
    if spec.accumulate < 1:
        raise KitError(f"accumulate: {spec.accumulate} is below 1 (1: a step every batch)")
    if spec.mixup < 0 or spec.cutmix < 0 or (spec.mixup and spec.cutmix):
        raise KitError(f"mixup: {spec.mixup}, cutmix: {spec.cutmix}: one of them, >= 0 (0: off)")
    if spec.jit_compile == "on" and (spec.mixup or spec.cutmix):
        raise KitError("jit_compile on with mixup/cutmix: XLA has no kernel for their beta draws "
                       "(jit_compile: auto leaves it off for them)")
    if spec.accumulate > 1 and spec.ema:
        raise KitError("ema with accumulate: Keras' average would start from the first batch, not the "
                       "first step: use one of them")
    if spec.class_weight != "none" and spec.task == "multilabel":
        raise KitError("class_weight: balanced weighs one class per image: for a multilabel task use "
                       "loss: focal")


def _validate_schedule(schedule):
    if not schedule:
        raise KitError("schedule: needs at least one phase")
    names = [p.name for p in schedule]
    if len(set(names)) != len(names):
        raise KitError(f"schedule: phase names must differ, got {names}")
    for p in schedule:
        if not re.fullmatch(r"none|all|progressive|top:[1-9][0-9]*", p.trainable):
            raise KitError(f"schedule: phase {p.name}: trainable {p.trainable!r} is not none, all, top:K "
                           f"or progressive")
        for key, value in (("round_lr", p.round_lr), ("lr_mult", p.lr_mult)):
            if not 0 < value <= 1:
                raise KitError(f"schedule: phase {p.name}: {key} {value} is not in (0, 1]")
        if p.max_blocks < 0:
            raise KitError(f"schedule: phase {p.name}: max_blocks {p.max_blocks} is below 0 (0: all blocks)")
        if p.trainable != "progressive" and (p.round_lr != 1 or p.max_blocks):
            raise KitError(f"schedule: phase {p.name}: round_lr and max_blocks are for trainable: "
                           f"progressive, not {p.trainable}")
        if p.epochs < 0 or p.warmup < 0 or p.patience < 0 or p.lr <= 0:
            raise KitError(f"schedule: phase {p.name}: epochs, warmup, patience >= 0 and lr > 0")
    if not any(p.epochs for p in schedule):
        raise KitError(f"schedule: every phase ({', '.join(names)}) has 0 epochs: nothing would train")


def _validate_forms(spec):
    if spec.layout in ("folders", "filename") and spec.image_form != "files":
        raise KitError(f"layout {spec.layout} reads labels from image files: it needs image_form files")
    if spec.layout == "records" and spec.image_form == "files":
        raise KitError("layout records reads labels from the image records: image_form cannot be files")
    if spec.layout == "long" and spec.task != "multilabel":
        raise KitError("layout long gives a 0/1 value per image and class: it needs task multilabel")
    if len(spec.image_shape) not in (0, 2, 3) or any(d < 1 for d in spec.image_shape) or \
            len(spec.image_shape) == 3 and spec.image_shape[2] not in (1, 3, 4):
        raise KitError(f"image_shape: {spec.image_shape} is not [height, width] or [height, width, 1|3|4]")
    if "parquet" in (spec.image_form, spec.test_image_form) and spec.image_cache == "off":
        raise KitError("image_cache: off reads images out of order, one at a time; parquet is read in order, "
                       "a batch of rows at a time: cache parquet images (auto, memory or disk)")
    if spec.dicom_window and (len(spec.dicom_window) != 2 or spec.dicom_window[1] <= 0):
        raise KitError(f"dicom_window: {spec.dicom_window} is not [center, width] with a positive width")


def check_backbone(name):
    if name not in BACKBONES:
        raise KitError(f"unknown backbone {name!r}{suggest(name, list(BACKBONES))} "
                       f"(known: {', '.join(BACKBONES)})")
    return BACKBONES[name]


def suggest(key, known):
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
