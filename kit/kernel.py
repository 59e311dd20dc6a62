"""Kaggle kernels: the kit running inside one, and push-ready bundles of one fold x backbone.

Inside a kernel (KAGGLE_KERNEL_RUN_TYPE is set, or /kaggle/input exists) the competition's data
is found under /kaggle/input (`<slug>` or `competitions/<slug>`), outputs go to
/kaggle/working, and ImageNet weights come from the Keras cache or an attached dataset: code
competitions run with the internet off. KIT_KAGGLE_ROOT stands in for /kaggle (tests).
"""
import dataclasses
import json
import os
import re
from pathlib import Path

from kit import KitError

ROOT_VARIABLE = "KIT_KAGGLE_ROOT"


def kaggle_root():
    return Path(os.environ.get(ROOT_VARIABLE) or "/kaggle")


def in_kernel():
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE")) or (kaggle_root() / "input").is_dir()


def kernel_paths(spec):
    """Inside a kernel, the default data and runs folders become /kaggle/input/... and
    /kaggle/working/runs; folders the spec or command line names are kept."""
    if not in_kernel():
        return spec
    working = kaggle_root() / "working"
    changes = {"runs_dir": str(working / "runs")} if spec.runs_dir == "runs" else {}
    if not spec.data_dir:
        synthetic = spec.source == "synthetic"
        changes["data_dir"] = str(working / "data" / spec.slug if synthetic else find_data(spec.slug))
    return dataclasses.replace(spec, **changes)


def find_data(slug):
    inputs = kaggle_root() / "input"
    for candidate in (inputs / slug, inputs / "competitions" / slug):
        if candidate.is_dir():
            return candidate
    attached = ", ".join(_attached(inputs)) or "nothing"
    raise KitError(f"competition {slug} is not attached to this kernel: no {inputs / slug} or "
                   f"{inputs / 'competitions' / slug} (attached: {attached}); add it to the kernel's inputs")


def _attached(inputs):
    """What a kernel has under /kaggle/input, with the competitions/ and datasets/<owner>/
    layers of Kaggle's newer layout looked into."""
    if not inputs.is_dir():
        return []
    found = []
    for p in sorted(inputs.iterdir()):
        if p.name == "competitions":
            found += [f"competitions/{c.name}" for c in sorted(p.iterdir())]
        elif p.name == "datasets":
            found += [f"datasets/{o.name}/{d.name}" for o in sorted(p.iterdir()) for d in sorted(o.iterdir())]
        else:
            found.append(p.name)
    return found


def keras_caches():
    """Where keras.utils.get_file keeps downloads: $KERAS_HOME or ~/.keras, else /tmp/.keras."""
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return [home / "models", Path("/tmp/.keras/models")]


def resolve_weights(weights, entry):
    """`imagenet` as Keras takes it when its file is in the cache (Keras then needs no network),
    else the path of a copy attached under /kaggle/input, else `imagenet` (Keras downloads it)."""
    if weights != "imagenet" or any((c / entry.weights_file).is_file() for c in keras_caches()):
        return weights
    inputs = kaggle_root() / "input"
    for folder, subfolders, files in os.walk(inputs):
        if entry.weights_file in files:
            return str(Path(folder) / entry.weights_file)
        if len(Path(folder).relative_to(inputs).parts) >= 4:  # weights sit near a dataset's top
            subfolders.clear()
    return weights


def missing_weights(backbone, entry, reason):
    """The error when Keras could not download the weights (no internet)."""
    caches = " or ".join(str(c) for c in keras_caches())
    why = reason.splitlines()[0][-80:]
    return (f"{backbone}: no ImageNet weights: {entry.weights_file} is not in the Keras cache ({caches}) "
            f"nor under {kaggle_root() / 'input'}, and downloading it failed ({why}). "
            f"Attach a dataset holding it (e.g. the public keras-pretrained-models; spec key "
            f"kernel_datasets), or set weights: <path of the file>")


def kaggle_user(given=""):
    """The Kaggle user name a kernel id starts with: given, KAGGLE_USERNAME, or kaggle.json's
    username (the key in that file is never read)."""
    if given or os.environ.get("KAGGLE_USERNAME"):
        return given or os.environ["KAGGLE_USERNAME"]
    token = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
    try:
        name = json.loads(token.read_text()).get("username")
    except (OSError, ValueError, AttributeError):
        name = None
    if not name:
        raise KitError("no Kaggle user name for the kernel id: give user=<your Kaggle name>, set "
                       "KAGGLE_USERNAME, or save your API token as ~/.kaggle/kaggle.json")
    return name


def slugify(text):
    """How Kaggle turns a kernel title into its slug."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def bundle_dir(spec, backbone, fold):
    return spec.runs_path / "kernels" / f"{backbone}-fold{fold}"


def build_bundle(spec, backbone, fold, user):
    """runs/<slug>/kernels/<backbone>-fold<K>/: kernel.py (the kit embedded) and
    kernel-metadata.json, ready for `kaggle kernels push`."""
    from kit.config import check_backbone, check_fold, dump
    from kit.data import load_data
    from kit.files import write_text
    from kit.folds import load_folds

    check_backbone(backbone)
    check_fold(spec, fold)
    if spec.weights not in (None, "imagenet") and not str(spec.weights).startswith("/kaggle/input/"):
        raise KitError(f"weights: {spec.weights} is a local file a kernel cannot see: attach it as a "
                       f"dataset (kernel_datasets) and use weights: imagenet or its /kaggle/input/... path")
    kit_dir = Path(__file__).resolve().parent
    files = {f"kit/{p.name}": p.read_text() for p in sorted(kit_dir.glob("*.py"))}
    portable = dataclasses.replace(spec, data_dir="", runs_dir="runs")
    if isinstance(spec.augment, str):  # an albumentations file travels inside the bundle
        files["augment" + Path(spec.augment).suffix] = Path(spec.augment).read_text()
        portable = dataclasses.replace(portable, augment="augment" + Path(spec.augment).suffix)
    files[f"competitions/{spec.slug}.yaml"] = dump(portable)
    if spec.source != "synthetic":  # the kernel trains on the folds every other run uses
        load_folds(spec, load_data(spec))
        files["folds.csv"] = (spec.runs_path / "folds.csv").read_text()
    title = f"{spec.slug[:50 - len(backbone) - 10]} {backbone} fold{fold}"
    args = ["train", f"backbone={backbone}", f"fold={fold}"]
    folder = bundle_dir(spec, backbone, fold)
    write_text(folder / "kernel.py", _script(title, spec.slug, files, args))
    metadata = {
        "id": f"{user}/{slugify(title)}", "title": title, "code_file": "kernel.py", "language": "python",
        "kernel_type": "script", "is_private": True, "enable_gpu": spec.kernel_gpu, "enable_tpu": False,
        "enable_internet": spec.kernel_internet, "dataset_sources": spec.kernel_datasets,
        "competition_sources": [spec.slug] if spec.source == "kaggle" else [],
        "kernel_sources": [], "model_sources": [],
    }
    write_text(folder / "kernel-metadata.json", json.dumps(metadata, indent=1) + "\n")
    return folder


def _script(title, slug, files, args):
    body = "".join(f"    {name!r}: {text!r},\n" for name, text in files.items())
    return f'''"""{title}: generated by kit (`make kernel`); trains on the competition {slug!r}.

The kit's code is embedded below, so this runs on Kaggle's Python image without pip or internet.
Outputs: /kaggle/working/runs/{slug}/...
"""
import os
import sys
import tempfile

FILES = {{
{body}}}
ARGS = {args!r}

home = tempfile.mkdtemp(prefix="kit-")
for name, text in FILES.items():
    path = os.path.join(home, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
sys.path.insert(0, home)
from kit.kernel import run_bundle  # noqa: E402

sys.exit(run_bundle(home, {slug!r}, ARGS))
'''


def run_bundle(home, slug, args):
    """Inside the kernel: put the bundled folds in place, then run the kit's command line."""
    from kit.__main__ import main
    from kit.config import load_spec

    home = Path(home)
    print(f"kit from {home / 'kit'}", flush=True)
    competition = str(home / "competitions" / f"{slug}.yaml")
    overrides = [f"augment={home / a.name}" for a in home.glob("augment.*")]
    spec = load_spec(competition, dict(o.split("=", 1) for o in overrides))
    folds = spec.runs_path / "folds.csv"
    if (home / "folds.csv").is_file() and not folds.is_file():
        folds.parent.mkdir(parents=True, exist_ok=True)
        folds.write_text((home / "folds.csv").read_text())
    return main([*args, f"competition={competition}", *overrides])
