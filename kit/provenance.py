"""What a run was trained on, kept in its config.yaml: the resolved spec, the run's own settings
(backbone, fold, size, the blocks its top:K opens) and checksums of its training ids, folds and
pseudo-labels. A finished run is kept, and a killed one resumed, only while these still hold;
else one line names what changed, and force=1 trains it again."""
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import yaml

from kit import KitError
from kit.backbones import BACKBONES
from kit.config import dump
from kit.files import write_text
from kit.folds import load_folds
from kit.members import image_size
from kit.runs import variant

# Spec keys that leave what a run learns unchanged: where files are, how fast it goes, what is
# done with its predictions. Any other key that changed makes a finished run stale.
AFTER = {"runs_dir", "data_dir", "workers", "image_cache", "cache_mb", "cache_dir", "tta", "tta_augment",
         "metric", "postprocess", "min_labels", "max_labels", "threshold", "clip", "submission",
         "kernel_datasets", "kernel_gpu", "kernel_internet", "backbones", "seeds", "image_sizes",
         "average_seeds", "pseudo_threshold", "test_ids", "test_dir", "sample_submission", "source"}

# What a run learnt from, as config.yaml's checksums (labels: recorded since 2026-11-28).
DATA = {"train_ids_sha1": "training images", "labels_sha1": "labels", "folds_sha1": "folds"}


def record_trained_on(spec, member, f, run):
    """config.yaml of a run of `member` starting on fold `f` (kit/folds.Fold)."""
    backbone = variant(member).backbone
    resolved = dataclasses.replace(spec, image_size=f.size)
    write_text(run.config, dump(resolved, backbone=backbone, member=member, fold=f.index,
                                blocks=list(BACKBONES[backbone].blocks),
                                **checksums(spec, f.data, load_folds(spec, f.data))))


def check_trained_on(spec, backbone, run, data):
    """A run to keep or resume must have been trained on these data with these settings."""
    if not run.config.is_file():
        return
    old = yaml.safe_load(run.config.read_text())
    resolved = dataclasses.replace(spec, image_size=image_size(spec, BACKBONES[backbone]))
    now = {**yaml.safe_load(dump(resolved)), **checksums(spec, data, load_folds(spec, data))}
    if any(p.trainable.startswith("top:") or p.trainable == "progressive" or p.lr_mult != 1
           for p in spec.schedule):  # the blocks matter to what it learns
        now["blocks"] = list(BACKBONES[backbone].blocks)
        old.setdefault("blocks", _blocks_before_recorded(backbone))
    changed = [k for k, v in now.items() if k not in AFTER and k in old and old[k] != v]
    if changed:
        named = {**DATA, "pseudo_sha1": "pseudo-labels",
                 "blocks": f"blocks of {backbone} (what top:K opens, kit/backbones.py)"}
        what = next((named[k] for k in named if k in changed), f"settings ({', '.join(changed[:4])})")
        raise KitError(f"{run.path} was trained on other {what} than the spec and data give now: force=1 "
                       f"trains it again (or put them back)")


def recorded(run):
    """A run's config.yaml, as a dict ({} for a run from before it was written)."""
    return yaml.safe_load(run.config.read_text()) if run.config.is_file() else {}


def check_same_data(spec, run, old, now, same_classes):
    """A finished run's predictions join the others' (cv, ensemble, release) only if it learnt
    from these training images and folds (`now`: checksums(...); `old`: its recorded(run)), and
    predicts these classes (`same_classes`)."""
    changed = [k for k in DATA if k in old and old[k] != now[k]]
    if changed or not same_classes:
        what = DATA[changed[0]] if changed else "classes"
        raise KitError(f"{run.path} was trained on other {what} than {spec.data_path} gives now: force=1 "
                       f"trains it again")


def settings_of(old):
    """What a run learnt and predicted with (its recorded config): a member's folds should agree on it."""
    return {k: v for k, v in old.items() if k not in {*AFTER, "fold", *DATA} - {"tta", "tta_augment"}}


def checksums(spec, data, fold_of):
    """What a run learns from, as checksums: its training ids, their folds, its pseudo-labels."""
    sha1 = lambda b: hashlib.sha1(b).hexdigest()
    pseudo = {"pseudo_sha1": sha1(Path(spec.pseudo).read_bytes())} if spec.pseudo else {}
    return {"train_ids_sha1": sha1("\n".join(data.train["id"]).encode()),
            "labels_sha1": sha1(np.ascontiguousarray(data.y).tobytes() + "\n".join(data.classes).encode()),
            "folds_sha1": sha1(np.asarray(fold_of).tobytes()), **pseudo}


def _blocks_before_recorded(backbone):
    """The blocks of a run whose config.yaml does not name them (trained before 2026-11-28): the
    registry's, but a ResNet's were its five stages then."""
    if BACKBONES[backbone].constructor.startswith("ResNet"):
        return [f"conv{i}_" for i in range(1, 6)]
    return list(BACKBONES[backbone].blocks)
