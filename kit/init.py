"""`make init`: competitions/<slug>.yaml from a competition's data folder, each key inferred with a
comment saying what was seen that chose it.

The guesses come from kit/survey.py, one guesser per label layout; a guess is kept only when the
kit reads the data with it (kit/data.load_data), so the spec init writes is one training reads.
The training keys (a first backbone, size, folds, schedule) follow the data's size. The metric is
given (metric=), or the one the competition's page lists when the kit scores it, or left unset,
which every command refuses in one line.
"""
import dataclasses
import math
from pathlib import Path

import numpy as np
import yaml

from kit import KitError, quoted
from kit.checks import validate
from kit.config import SPEC_DIRS, Phase, Spec, build_spec, override
from kit.containers import reader
from kit.data import load_data
from kit.decode import BadImage
from kit.files import write_text
from kit.metrics import METRICS, kaggle_metric
from kit.survey import GUESSERS, sample_keys, single_label_task, survey


def init(slug, overrides=None, force=False, folder=SPEC_DIRS[0], ask_metric=None):
    """competitions/<slug>.yaml from data/<slug>/ (or `data_dir`); `overrides`: keys given on the
    command line, kept as given (metric=log_loss). Without a metric, `ask_metric()` gives the name
    the competition's page lists (kit/kaggle/client.py). Returns the spec file's path."""
    overrides = dict(overrides or {})
    path = Path(folder) / f"{slug}.yaml"
    if path.exists() and not force:
        raise KitError(f"{path} exists: make init never overwrites a spec (force=1 does)")
    if overrides.get("metric") and overrides["metric"] not in METRICS and kaggle_metric(overrides["metric"]):
        overrides["metric"] = kaggle_metric(overrides["metric"])  # metric="Categorization Accuracy"
    _with_given(Spec(slug), overrides)  # a misspelt key or a bad value: one line before any work
    root = Path(overrides.get("data_dir") or f"data/{slug}")
    if not root.is_dir():
        raise KitError(f"no data folder {root}: make download competition={slug} first (or data_dir=)")
    found = survey(root, overrides)
    guess, spec, data = _first_read(slug, found, overrides)
    keys, why = {**guess.keys, **sample_keys(found)}, dict(guess.why)
    if "data_dir" in overrides:
        keys["data_dir"] = overrides["data_dir"]
    if "task" not in keys:  # the labels as the layout reads them: one per image
        keys["task"], why["task"] = single_label_task(found, len(data.classes))
    why["task"] += f": {quoted(data.classes, 8)}"
    if keys["task"] == "binary":
        why["task"] += f"; the submission holds P({data.classes[1]}) (classes: [negative, positive] turns it)"
    if found.other_samples:
        keys["sample_submission"] = found.sample
        why["sample_submission"] = f"it names the test images (also {', '.join(found.other_samples)})"
    keys.update(_training(spec, data, why))
    keys["metric"], why["metric"] = _metric(keys["task"], ask_metric if not overrides.get("metric") else None)
    keys = _given(slug, keys, why, overrides)
    write_text(path, _yaml(slug, root, keys, why))
    return path


def _metric(task, ask):
    """(the metric, what chose it): Kaggle's listed one when the kit scores it, else unset."""
    unset = "set it to the competition's (make init metric=...); training refuses until then"
    try:
        listed = ask() if ask else None
    except KitError as e:
        return "", f"unknown ({e}): {unset}"
    if not listed:
        return "", f"unknown{' (Kaggle lists none)' if listed == '' else ''}: {unset}"
    name = kaggle_metric(listed)
    if name is None or task not in METRICS[name].tasks:
        return "", f"Kaggle lists {listed!r}, which the kit does not score for a {task} task: {unset}"
    return name, f"Kaggle lists {listed!r}"


def _given(slug, keys, why, overrides):
    """`keys` with the command line's `key=value`s applied as `make train` applies them (typed,
    phase keys such as epochs_head= included) and checked."""
    spec = build_spec({"slug": slug, **keys, "metric": keys["metric"] or "accuracy"}, "make init")
    for key, text in overrides.items():
        if key == "metric" and not text:
            continue  # still unknown
        spec = override(spec, key, text)
        field = key if key in Spec.__dataclass_fields__ else "schedule"
        keys[field], why[field] = getattr(spec, field), "given on the command line"
        if field == "schedule":
            default = {f.name: f.default for f in dataclasses.fields(Phase)}
            keys[field] = [{k: v for k, v in dataclasses.asdict(p).items() if k == "name" or v != default[k]}
                           for p in spec.schedule]
    if keys["metric"]:
        validate(spec)
    return keys


def _first_read(slug, found, overrides):
    """(the first guess the kit reads the data with, its spec, the data)."""
    tried = []
    for layout, guess in GUESSERS.items():
        for g in guess(found):
            try:
                spec = _spec(slug, found, g.keys, overrides)
                return g, spec, load_data(spec)
            except KitError as e:
                tried.append(f"layout {layout} ({', '.join(f'{k}={v}' for k, v in g.keys.items())}): {e}")
    problems = [images.problem for images in found.sets if images.problem]
    seen = "; ".join([*problems, *tried][:2]) or ("no labels CSV naming the images, no folder per class, no "
                                                  "labels in file names")
    raise KitError(f"{found.root}: no layout reads it ({seen}): write competitions/{slug}.yaml from the "
                   f"README (Competition specs)")


def _spec(slug, found, keys, overrides):
    """The spec of a guess with the command line's keys (a metric that fits every task: reading
    the data does not need the competition's)."""
    spec = dataclasses.replace(Spec(slug), **keys, **sample_keys(found), data_dir=str(found.root))
    spec = dataclasses.replace(_with_given(spec, overrides), metric="log_loss")
    validate(spec)
    return spec


def _with_given(spec, overrides):
    """`spec` with the command line's keys but the two init reads itself (metric, data_dir)."""
    for key, text in overrides.items():
        if key not in ("metric", "data_dir"):
            spec = override(spec, key, text)
    return spec


def _training(spec, data, why):
    """A first backbone, size, folds and schedule for this much data."""
    n, multilabel = len(data.train), np.asarray(data.y).ndim == 2
    counts = np.asarray(data.y).sum(0) if multilabel else np.bincount(np.asarray(data.y).astype(int))
    smallest = int(counts.min())
    folds = 5 if multilabel or smallest >= 5 else max(2, smallest)
    sides = _sides(reader(spec), data.train["path"][:32])
    side = int(np.median(sides)) if sides else 224
    size = int(min(224, max(32, 32 * math.ceil(side / 32))))
    per_fold = n * (folds - 1) // folds
    batch = int(min(32, max(4, 2 ** int(math.log2(max(1, per_fold // 8))))))
    epochs = 20 if n < 20000 else 8
    out = {"backbones": ["resnet50"], "image_size": size, "n_folds": folds, "batch_size": batch,
           "schedule": [{"name": "head", "trainable": "none", "epochs": epochs, "lr": 1e-3},
                        {"name": "finetune", "trainable": "top:1", "epochs": epochs, "lr": 1e-5}]}
    why.update({
        "backbones": "a sound first member; add others with one line each (make backbones lists them)",
        "image_size": f"the training images are about {side} px (the median of {len(sides)}): "
                      f"{size} px, at most 224",
        "n_folds": f"{n} training images; the rarest {'label' if multilabel else 'class'} has {smallest}" +
                   ("" if folds == 5 else ": fewer folds, so each has one"),
        "batch_size": f"about {per_fold} training images a fold",
        "schedule": "the head on the frozen base, then the top block at a rate 100x lower"})
    return out


def _sides(read, paths, wanted=16):
    """The shorter side of the first `wanted` images that decode (a broken one is training's to skip)."""
    sides = []
    for path in paths:
        try:
            sides.append(min(read.read(path).shape[:2]))
        except BadImage:
            continue
        if len(sides) == wanted:
            break
    return sides


def _yaml(slug, root, keys, why):
    lines = [f"# competitions/{slug}.yaml, written by make init from {root}/: each comment says what it saw.",
             "# Every other key has its default (make spec prints them all)."]
    for key, value in keys.items():
        block = key == "schedule"  # a phase a line
        text = yaml.safe_dump({key: value}, default_flow_style=None if block else True, sort_keys=False,
                              width=1000).strip()
        text = text if block else text[1:-1]  # {key: value} -> key: value
        comment = why.get(key)
        if comment and not block:
            lines.append(f"{text}  # {comment}")
        else:
            lines += ([f"# {comment}"] if comment else []) + [text]
    return "\n".join(lines) + "\n"
