"""Push-ready Kaggle kernel bundles under runs/<slug>/kernels/: one fold x backbone to train, or
the inference of a release for a code competition; each one self-contained script (the kit's
modules it runs, embedded) and its kernel-metadata.json.

The script writes the embedded files to a temporary folder and enters the kit through
`kit.cli.run_bundle`, so it runs on Kaggle's Python image without pip or internet.
"""
import ast
import dataclasses
import json
import re
from pathlib import Path

from kit import KitError
from kit.backbones import BACKBONES
from kit.config import check_fold, dump
from kit.data import load_data
from kit.files import write_text
from kit.folds import load_folds
from kit.kaggle.release import load_release, release_dir
from kit.members import member_spec
from kit.runs import folds_file, kernels_dir
from kit.runtime import IMAGE, WHEELS, kernel_needs, plan

ROOT = Path(__file__).resolve().parent.parent.parent  # holds kit/
COMMAND_LINE = ("kit.cli", "kit.kaggle.commands")  # their commands import lazily, when they run
METADATA = "kernel-metadata.json"  # beside kernel.py, as `kaggle kernels push` reads them
WHEELS_DATASET = "kit-wheels"  # <user>/kit-wheels: what kernels need beyond Kaggle's image (make wheels)


def module_file(module):
    """kit/train.py for "kit.train", kit/kaggle/__init__.py for "kit.kaggle", or None."""
    for path in (ROOT / f"{module.replace('.', '/')}.py", ROOT / module.replace(".", "/") / "__init__.py"):
        if path.is_file():
            return path
    return None


def kit_imports(module, inside_functions=True):
    """The kit modules that `module` (e.g. "kit.train") imports, by reading its source; a
    module in a package imports its package too."""
    tree = ast.parse(module_file(module).read_text())
    found = {module.rpartition(".")[0]} - {""}
    for node in ast.walk(tree) if inside_functions else tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "kit"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kit":
            found.add(node.module)  # `from kit.kaggle import client` names a module
            found |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}")}
    return found


def kernel_modules(command):
    """The kit modules a kernel running `command` (a module such as "kit.train") needs: what the
    command line's modules import up front (each command imports its own when it runs), what
    a kernel's first step imports (kit.runtime) and everything the command imports."""
    seen, todo = set(), {"kit.cli", "kit.runtime", command}
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo |= kit_imports(module, inside_functions=module not in COMMAND_LINE)
    return sorted(seen)


def slugify(text):
    """How Kaggle turns a kernel title into its slug."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def bundle_dir(spec, member, fold):
    return kernels_dir(spec) / f"{member}-fold{fold}"


def bundles(spec):
    """(backbone, fold, kernel id) of every bundle built for the competition."""
    found = []
    for meta in sorted(kernels_dir(spec).glob(f"*-fold*/{METADATA}")):
        backbone, _, fold = meta.parent.name.rpartition("-fold")
        found.append((backbone, int(fold), kernel_id(meta.parent)))
    if not found:
        raise KitError(f"no kernels of {spec.slug} under {kernels_dir(spec)}: make kernels first")
    return found


KERNEL_CACHE = "/tmp/kit-cache"


def build_bundle(spec, member, fold, user):
    """runs/<slug>/kernels/<member>-fold<K>/: a kernel training one fold of one member."""
    backbone, trained = member_spec(spec, member)
    check_fold(spec, fold)
    if spec.weights not in (None, "imagenet") and not str(spec.weights).startswith("/kaggle/input/"):
        raise KitError(f"weights: {spec.weights} is a local file a kernel cannot see: attach it as a "
                       f"dataset (kernel_datasets) and use weights: imagenet or its /kaggle/input/... path")
    files, where = {}, {}
    data = load_data(spec)
    # caches outside /kaggle/working: it is the kernel's output, 20 GB at most, and kept
    portable = dataclasses.replace(spec, data_dir="", runs_dir="runs", cache_dir=KERNEL_CACHE)
    if isinstance(spec.augment, str):  # an albumentations file travels inside the bundle
        where["augment"] = "augment" + Path(spec.augment).suffix
        files[where["augment"]] = Path(spec.augment).read_text()
    if spec.source != "synthetic":  # the kernel trains on the folds every other run uses
        load_folds(spec, data)
        where["folds"] = "folds.csv"
        files[where["folds"]] = folds_file(spec).read_text()
    if trained.pseudo:  # and the pseudo-labels a -pseudo member trains on
        where["pseudo"] = "pseudo.csv"
        files[where["pseudo"]] = Path(spec.pseudo).read_text()
    portable = dataclasses.replace(portable, pseudo="")  # the bundle's own copy, put in by run_bundle
    title = f"{spec.slug[:50 - len(member) - 10]} {member} fold{fold}"
    args = ["train", f"backbone={member}", f"fold={fold}"]
    entry = BACKBONES[backbone]  # a keras-hub backbone's pretrained weights: a Kaggle Model to attach
    models = [entry.preset.removeprefix("kaggle://")] if entry.hub and spec.weights == "imagenet" else []
    metadata = {"enable_internet": spec.kernel_internet, "dataset_sources": spec.kernel_datasets,
                "model_sources": models}
    return _write(portable, bundle_dir(spec, member, fold), title, "kit.train", args, files, where,
                  user, metadata, _runtime([backbone], data, user))


def build_inference_bundle(spec, user):
    """runs/<slug>/kernels/inference/: the code-competition kernel. It reads the release's
    models dataset (`make publish`) and writes /kaggle/working/submission.csv; internet off."""
    release = load_release(release_dir(spec))
    portable = dataclasses.replace(spec, data_dir="", runs_dir="runs", weights=None, augment=[])
    metadata = {"enable_internet": False,  # the client's default is on; a code competition's re-run is off
                "dataset_sources": [release.dataset, *spec.kernel_datasets]}
    runtime = _runtime(release.spec.backbones, load_data(spec), user)
    title = f"{spec.slug[:40]} inference"
    return _write(portable, kernels_dir(spec) / "inference", title, "kit.kaggle.infer", ["infer"], {}, {},
                  user, metadata, runtime)


def _runtime(backbones, data, user):
    """What the kernel needs beyond Kaggle's image (kit/runtime.py): said here, carried in the
    bundle, installed at its start from the wheels dataset, which its metadata attaches."""
    dataset = f"{user}/{WHEELS_DATASET}"
    needs = kernel_needs(backbones, data)
    for need in needs:
        print(f"kernel: needs {need.package} ({need.why}), which Kaggle's image lacks: it attaches {dataset} "
              f"(make wheels and make publish-wheels make it, once)")
    return plan(needs, dataset, backbones)


def _write(spec, folder, title, command, args, files, where, user, metadata, runtime):
    """kernel.py (the modules `command` needs, the spec, `files`, what it needs beyond Kaggle's
    image) and kernel-metadata.json in `folder`, ready for `kaggle kernels push`. `where`: what
    run_bundle finds in `files`."""
    carried = [module_file(m) for m in kernel_modules(command)]
    files = {**{p.relative_to(ROOT).as_posix(): p.read_text() for p in carried}, **files}
    for name in (IMAGE, WHEELS):  # the versions the kernel holds itself to, the wheels it may install
        files[f"kit/{name}"] = (ROOT / "kit" / name).read_text()
    files["runtime.json"] = json.dumps(runtime, indent=1) + "\n"
    if runtime["needs"]:
        metadata = {**metadata, "dataset_sources": [*metadata["dataset_sources"], runtime["wheels"]]}
    where = {"spec": f"competitions/{spec.slug}.yaml", "runtime": "runtime.json", **where}
    files[where["spec"]] = dump(spec)
    write_text(folder / "kernel.py", _script(title, spec.slug, files, args, where))
    metadata = {
        "id": f"{user}/{slugify(title)}", "title": title, "code_file": "kernel.py", "language": "python",
        "kernel_type": "script", "is_private": True, "enable_gpu": spec.kernel_gpu, "enable_tpu": False,
        "competition_sources": [spec.slug] if spec.source == "kaggle" else [],
        "kernel_sources": [], "model_sources": [], **metadata,
    }
    write_text(folder / METADATA, json.dumps(metadata, indent=1) + "\n")
    return folder


def kernel_id(folder):
    """The id (user/slug) of the kernel a bundle folder pushes."""
    return json.loads((Path(folder) / METADATA).read_text())["id"]


def _script(title, slug, files, args, where):
    body = "".join(f"    {name!r}: {text!r},\n" for name, text in files.items())
    return f'''"""{title}: generated by kit (`make kernel` / `make inference-kernel`), competition {slug!r}.

The kit's code is embedded below, so this runs on Kaggle's Python image without pip or internet.
Outputs go to /kaggle/working.
"""
import atexit
import os
import shutil
import sys
import tempfile

FILES = {{
{body}}}
ARGS = {args!r}

home = tempfile.mkdtemp(prefix="kit-")
atexit.register(shutil.rmtree, home, True)
for name, text in FILES.items():
    path = os.path.join(home, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
sys.path.insert(0, home)
from kit.cli import run_bundle  # noqa: E402

sys.exit(run_bundle(home, ARGS, **{where!r}))
'''
