"""`make release`: a trained ensemble as one flat folder, ready to be a Kaggle dataset that an
offline inference kernel reads (kit/infer.py).

    runs/<slug>/release/
        <member>-fold<k>.keras  the model of every run in the ensemble (flat: the official
                                client skips subfolders unless it zips them)
        spec.yaml               the resolved spec, portable (data and runs folders found where it runs)
        augment.json            the albumentations pipeline, when the spec names a file
        recipe.json             the ensemble exactly as `make ensemble` makes it: method, member
                                weights, each run's image size, TTA, classes, submission format, CV
        kit-release.json        the manifest: the sha256 of every file above
        dataset-metadata.json   for the official client: id <user>/<slug>-models, title, licence

Built from unchanged runs it is the same bytes, so `make publish` makes a new dataset version
only when something changed. It holds no credentials.
"""
import dataclasses
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from kit import KitError
from kit.augment import serialized
from kit.config import Spec, check_backbone, dump, load_spec
from kit.data import load_data
from kit.ensemble import combine, labels_of, load_members
from kit.env import search_inputs
from kit.files import read_csv
from kit.metrics import spec_score
from kit.runs import probabilities, run_of
from kit.submission import submission_format

MANIFEST = "kit-release.json"  # also how a kernel recognises a release among its inputs
METADATA = "dataset-metadata.json"


def release_dir(spec):
    return spec.runs_path / "release"


def dataset_id(slug, user):
    """<user>/<slug>-models, within Kaggle's 6-50 characters for a dataset slug."""
    return f"{user}/{slug[:43].rstrip('-')}-models"


@dataclass
class Release:
    folder: Path
    spec: Spec
    recipe: dict
    digest: str  # of the manifest: changes with any file


def build_release(spec, method, user, members=""):
    """runs/<slug>/release/ for the finished runs of `members` (backbone names, comma-separated;
    default: every backbone of the spec with a finished run), ensembled by `method`."""
    names = [m.strip() for m in members.split(",") if m.strip()] if members else []
    for name in names:
        check_backbone(name)
    chosen = dataclasses.replace(spec, backbones=names) if names else spec
    data = load_data(chosen)
    found, missing = load_members(chosen, data)
    absent = [n for n in names if n not in {m.name for m in found}]
    if absent:
        raise KitError(f"members: {absent[0]} has no finished run under {spec.runs_path / absent[0]}: "
                       f"train it first, or leave it out of members=")
    y_of = labels_of(data)
    ids, oof, _, weights = combine(chosen, found, y_of, method)
    sample = read_csv(spec.data_path / spec.sample_submission, "sample submission")
    files, recipe_members = {}, []
    for member, weight in zip(found, weights):
        if not weight:  # adds nothing to the ensemble: not worth a kernel's time
            missing.append(f"{member.name} (weight 0)")
            continue
        runs = []
        for fold in member.folds:
            run = run_of(spec, member.name, fold)
            name = f"{member.name}-fold{fold}.keras"
            files[name] = run.model
            size = yaml.safe_load(run.config.read_text())["image_size"]
            runs.append({"fold": fold, "file": name, "image_size": size})
        score = spec_score(spec, y_of(member.oof.index), probabilities(spec.task, member.oof))
        recipe_members.append({"name": member.name, "weight": float(weight), "runs": runs,
                               "cv": round(score, 6)})
    recipe = {
        "competition": spec.slug, "task": spec.task, "metric": spec.metric, "classes": list(data.classes),
        "method": method, "members": recipe_members, "cv": round(spec_score(spec, y_of(ids), oof), 6),
        "missing": missing, "tta": {"views": list(spec.tta), "augmented": spec.tta_augment},
        "submission": {"format": submission_format(spec, sample, data.classes), "threshold": spec.threshold,
                       "clip": spec.clip, "columns": list(sample.columns)},
    }
    return _write(spec, user, files, recipe)


def _write(spec, user, models, recipe):
    """Every file into a new folder, then swapped in whole: a failure leaves the old release."""
    portable = dataclasses.replace(spec, data_dir="", runs_dir="runs", weights=None,
                                   backbones=[m["name"] for m in recipe["members"]])
    texts = {"recipe.json": json.dumps(recipe, indent=1, sort_keys=True) + "\n"}
    if isinstance(spec.augment, str):
        texts["augment.json"] = json.dumps(serialized(spec.augment), indent=1, sort_keys=True) + "\n"
        portable = dataclasses.replace(portable, augment="augment.json")
    texts["spec.yaml"] = dump(portable)
    folder = release_dir(spec)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".release-", dir=folder.parent))
    try:
        for name, source in models.items():
            shutil.copyfile(source, tmp / name)
        for name, text in texts.items():
            (tmp / name).write_text(text)
        manifest = {"competition": spec.slug, "files": {p.name: _sha256(p) for p in sorted(tmp.iterdir())}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        metadata = {"id": dataset_id(spec.slug, user), "title": f"{spec.slug[:42]} models",
                    "licenses": [{"name": "CC0-1.0"}]}
        (tmp / METADATA).write_text(json.dumps(metadata, indent=1) + "\n")
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_release(slug):
    """The release of `slug` attached to a kernel, wherever Kaggle mounted the dataset."""
    def holds(folder, files):
        return MANIFEST in files and json.loads((folder / MANIFEST).read_text()).get("competition") == slug
    return search_inputs(holds, f"the models dataset of {slug} (a folder holding {MANIFEST})",
                         f"attach the dataset `make publish competition={slug}` made")


def load_release(folder, overrides=None):
    """The release in `folder`, every file checked against its manifest, and its spec (with the
    command line's `overrides`)."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise KitError(f"no release at {folder} (no {MANIFEST}): make release first")
    manifest = json.loads((folder / MANIFEST).read_text())
    for name, digest in manifest["files"].items():
        if not (folder / name).is_file():
            raise KitError(f"{folder / name} is missing from the release: make release and publish it again")
        if _sha256(folder / name) != digest:
            raise KitError(f"{folder / name} does not match its checksum in {MANIFEST} (damaged or changed): "
                           f"make release and publish it again")
    overrides = dict(overrides or {})
    if (folder / "augment.json").is_file():
        overrides.setdefault("augment", str(folder / "augment.json"))
    spec = load_spec(str(folder / "spec.yaml"), overrides)
    recipe = json.loads((folder / "recipe.json").read_text())
    return Release(folder, spec, recipe, hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest())
