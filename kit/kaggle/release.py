"""`make release`: a trained ensemble as one flat folder, ready to be a Kaggle dataset that an
offline inference kernel reads (kit/kaggle/infer.py).

    runs/<slug>/release/
        <member>-fold<k>.weights.npz  the weights of every run's model (kit/portable.py: any
                                supported keras reads them; flat: the official client skips
                                subfolders unless it zips them)
        spec.yaml               the resolved spec, portable (data and runs folders found where it runs)
        augment.json            the albumentations pipeline, when the spec names a file
        recipe.json             the ensemble exactly as `make ensemble` makes it: method, member
                                weights, each run's backbone and image size, TTA, classes,
                                submission format, CV
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
from kit.checks import check_backbone
from kit.config import Spec, dump, load_spec
from kit.data import load_data
from kit.ensemble import choose, labels_of, load_members
from kit.env import inputs_where, not_attached
from kit.files import UMASK, read_csv, replace_folder
from kit.metrics import spec_score
from kit.model import released
from kit.portable import save_portable
from kit.postprocess import fit
from kit.pretrained import load_model
from kit.runs import probabilities, run_of, variant
from kit.sample_format import submission_format

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

    @property
    def dataset(self):
        """The Kaggle dataset it is published as (owner/slug)."""
        return _json(self.folder / METADATA)["id"]

    def stale(self, spec):
        """The runs of `spec` retrained since the release was made (their models are not its copies)."""
        return [f"{r['member']}/fold{r['fold']}" for m in self.recipe["members"] for r in m["runs"]
                if not run_of(spec, r["member"], r["fold"]).model.is_file()
                or _sha256(run_of(spec, r["member"], r["fold"]).model) != r["model_sha256"]]


def build_release(spec, method, user, members=""):
    """runs/<slug>/release/ for the finished runs of `members` (member names, comma-separated;
    default: every member of the spec with a finished run), ensembled by `method` (auto: the
    best honest CV) and post-processed exactly as `make ensemble` would."""
    data, found, missing = _members(spec, members)
    y_of = labels_of(data)
    chosen, _ = choose(spec, found, y_of, method)
    e = chosen.ensemble
    weights = e.params.get("weights", [None] * len(found))
    models, entries, views, kept = {}, [], set(), []
    for k, (member, weight) in enumerate(zip(found, weights)):
        if weight == 0:  # adds nothing to the ensemble: not worth a kernel's time
            missing.append(f"{member.name} (weight 0)")
            continue
        kept.append(k)
        runs = []
        for part, fold in member.runs:
            run, name = run_of(spec, part, fold), f"{part}-fold{fold}.weights.npz"
            config = yaml.safe_load(run.config.read_text())
            views.add(_views(spec, config))
            models[name] = run.model
            runs.append({"member": part, "fold": fold, "file": name, "backbone": variant(part).backbone,
                         "image_size": config["image_size"], "model_sha256": _sha256(run.model)})
        score = spec_score(spec, y_of(member.oof.index), probabilities(spec.task, member.oof))
        entries.append({"name": member.name, "weight": weight, "runs": runs, "cv": round(score, 6)})
    if len(views) != 1:
        raise KitError(f"the runs were predicted with different test-time views ([tta, tta_augment]: "
                       f"{' and '.join(sorted(views))}): predict them again alike (make predict ... tta=...)")
    tta, tta_augment = json.loads(views.pop())
    spec = dataclasses.replace(spec, tta=tta, tta_augment=tta_augment)
    sample = read_csv(spec.data_path / spec.sample_submission, "sample submission")
    params = e.params if e.method == "stack" else {"weights": [weights[k] for k in kept]}
    recipe = {
        "competition": spec.slug, "task": spec.task, "metric": spec.metric, "classes": list(data.classes),
        "method": e.method, "ensemble": params, "members": entries, "missing": missing,
        "postprocess": fit(spec, e.y, e.oof) if chosen.apply_postprocess else None,
        "cv": round(chosen.score, 6), "cv_without_postprocess": round(chosen.cv, 6),
        "tta": {"views": tta, "augmented": tta_augment},
        "submission": {"format": submission_format(spec, sample, data.classes), "threshold": spec.threshold,
                       "clip": spec.clip, "columns": list(sample.columns)},
    }
    return _write(spec, user, models, recipe)


def _members(spec, members):
    """(data, members, missing runs): the members named (every one of the spec's by default)
    with at least one finished run; a named one without is an error."""
    names = [m.strip() for m in members.split(",") if m.strip()]
    for name in names:
        check_backbone(variant(name.removesuffix("-seeds")).backbone)
    data = load_data(spec)
    found, missing = load_members(spec, data)
    absent = [n for n in names if n not in {m.name for m in found}]
    if absent:
        raise KitError(f"members: {absent[0]} has no finished run under {spec.runs_path / absent[0]} "
                       f"(members: {', '.join(m.name for m in found)}): train it first, or leave it out")
    if names:
        found = [m for m in found if m.name in names]
        missing = [r for r in missing if r.split("/")[0] in names]
    return data, found, missing


def _views(spec, config):
    """The test-time views a run's predictions were made with (its config.yaml), as JSON. Seeded
    augmented views are the same views only with the spec's seed and pipeline."""
    same_draws = (config.get("seed"), config.get("augment")) == (spec.seed, spec.augment)
    if config.get("tta_augment") and not same_draws:
        raise KitError(f"{config.get('backbone')}/fold{config.get('fold')} was predicted with augmented "
                       f"views of another seed or pipeline than the spec's: predict it again (make predict)")
    return json.dumps([config.get("tta", []), config.get("tta_augment", 0)])


def _write(spec, user, models, recipe):
    """Every file into a new folder, then swapped in whole: a failure leaves the old release."""
    runs = [r for m in recipe["members"] for r in m["runs"]]
    backbones = list(dict.fromkeys(variant(r["member"]).backbone for r in runs))
    portable = dataclasses.replace(spec, data_dir="", runs_dir="runs", weights=None, backbones=backbones,
                                   seeds=[], image_sizes=[], average_seeds=False, pseudo="")
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
            with released():  # one model in memory at a time
                save_portable(load_model(source), tmp / name)  # a damaged model is one line here
        for name, text in texts.items():
            (tmp / name).write_text(text)
        manifest = {"competition": spec.slug, "files": {p.name: _sha256(p) for p in sorted(tmp.iterdir())}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        metadata = {"id": dataset_id(spec.slug, user), "title": f"{spec.slug[:42]} models",
                    "licenses": [{"name": "CC0-1.0"}]}
        (tmp / METADATA).write_text(json.dumps(metadata, indent=1) + "\n")
        tmp.chmod(0o777 & ~UMASK)
        replace_folder(tmp, folder)
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
    """The release of `slug` attached to a kernel, wherever Kaggle mounted the dataset: one line if
    none is, if two are (which one is meant?), or if a manifest there cannot be read."""
    held = inputs_where(lambda folder, files: MANIFEST in files)
    manifests = {folder: _json(folder / MANIFEST, {}) for folder in held}
    mine = [f for f, m in manifests.items() if isinstance(m, dict) and m.get("competition") == slug]
    damaged = [f for f, m in manifests.items() if not (isinstance(m, dict) and m)]
    if len(mine) > 1:
        raise KitError(f"{len(mine)} releases of {slug} are attached ({', '.join(map(str, mine))}): attach "
                       f"only the one to predict with")
    if not mine and damaged:
        raise KitError(f"{damaged[0] / MANIFEST} is not readable JSON: a damaged release? make release and "
                       f"publish it again")
    if not mine:
        raise not_attached(f"the models dataset of {slug} (a folder holding {MANIFEST})",
                           f"attach the dataset `make publish competition={slug}` made")
    return mine[0]


# What may differ where a release runs; the rest is the recipe its CV was measured with.
RUN_TIME = ("data_dir", "runs_dir", "batch_size", "workers", "image_cache", "cache_mb")


def load_release(folder, overrides=None):
    """The release in `folder`, every file checked against its manifest, and its spec. Only the
    keys of RUN_TIME may be overridden: the rest is the recipe the CV was measured with."""
    folder = Path(folder)
    fixed = sorted(set(overrides or {}) - set(RUN_TIME))
    if fixed:
        raise KitError(f"{fixed[0]} is fixed by the release (its recipe made the CV); only "
                       f"{', '.join(RUN_TIME)} may change where it runs")
    if not (folder / MANIFEST).is_file():
        raise KitError(f"no release at {folder} (no {MANIFEST}): make release first")
    manifest = _json(folder / MANIFEST)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise KitError(f"{folder / MANIFEST} lists no files: a damaged release? make release and publish "
                       f"it again")
    for name, digest in files.items():
        if not (folder / name).is_file():
            raise KitError(f"{folder / name} is missing from the release: make release and publish it again")
        if _sha256(folder / name) != digest:
            raise KitError(f"{folder / name} does not match its checksum in {MANIFEST} (damaged or changed): "
                           f"make release and publish it again")
    recipe = _json(folder / "recipe.json")
    runs = [r for m in recipe["members"] for r in m["runs"]]
    if any("backbone" not in r for r in runs):
        raise KitError(f"{folder} was made by an older kit (its models are .keras files, which an older "
                       f"keras may not load): make release and publish it again")
    needed = ["recipe.json", "spec.yaml", *(r["file"] for r in runs)]
    unlisted = [name for name in needed if name not in files]
    if unlisted:
        raise KitError(f"{folder / MANIFEST} does not list {unlisted[0]} (damaged or changed): make release "
                       f"and publish it again")
    overrides = dict(overrides or {})
    if (folder / "augment.json").is_file():
        overrides["augment"] = str(folder / "augment.json")
    spec = load_spec(str(folder / "spec.yaml"), overrides)
    digest = hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
    return Release(folder, spec, recipe, digest)


def _json(path, default=None):
    """A JSON file of the release; damaged, it is one line (or `default`, when given)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        if default is not None:
            return default
        raise KitError(f"{path} is not readable JSON: a damaged release? make release and publish it "
                       f"again") from None
