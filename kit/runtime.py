"""What a kernel runs on: Kaggle's notebook image (kit/kaggle-image.txt: the versions CI tests,
the floor a kernel holds the notebook to when it starts), and what a spec needs that the image
lacks (kit/kaggle-wheels.txt), brought by the dataset of wheels `make wheels` makes, installed
offline when the kernel starts.

What a kernel needs is decided where the kernel is built (`kernel_needs`: the data and every
decoder are there); the kernel only looks whether each need is installed. Nothing here imports
TensorFlow, keras-hub or pydicom: a kernel installs before they are imported (pydicom looks for
its decoders once, on import).
"""
import importlib
import importlib.metadata
import json
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.version import Version

from kit import KitError
from kit.backbones import BACKBONES
from kit.decode import DICOM_EXTS
from kit.env import search_inputs

HERE = Path(__file__).resolve().parent
IMAGE, WHEELS = "kaggle-image.txt", "kaggle-wheels.txt"
MANIFEST = "kit-wheels.json"  # also how a kernel recognises the wheels dataset among its inputs
PYTHON = "3.11"  # the oldest Python CI tests: the kit's own venv
IMAGE_PYTHON = "3.12"  # Kaggle's image's: what the wheels are for
HELD = ("tensorflow", "keras", "keras-hub")  # said when a kernel starts, held to the image's versions
DICOM = ("python-gdcm", "pylibjpeg", "pylibjpeg-openjpeg")  # decoders beyond Pillow's, as the kit's venv has


def pins(name):
    """{distribution: version} of a requirements file beside this module (name==version lines)."""
    found = {}
    for line in (HERE / name).read_text().splitlines():
        dist, _, version = line.split("#")[0].strip().partition("==")
        if dist:
            found[canonical(dist)] = version
    return found


def canonical(name):
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Need:
    package: str  # a distribution of kaggle-wheels.txt
    why: str  # what needs it: said in the log and in the error
    at_least: str = ""  # the version it needs (an older one installed does not do)


def kernel_needs(backbones, data):
    """What a kernel predicting or training `backbones` on `data` (kit.data.Data) needs that
    Kaggle's image lacks: [Need]. Decided here, where the data and every decoder are."""
    image, needs = pins(IMAGE), []
    for name in dict.fromkeys(backbones):
        entry = BACKBONES[name]
        if entry.hub and entry.hub_version and Version(entry.hub_version) > Version(image["keras-hub"]):
            why = f"{name}: keras_hub.models.{entry.constructor} is new in keras-hub {entry.hub_version}"
            needs.append(Need("keras-hub", why, entry.hub_version))
    paths = [p for p in (*data.train["path"], *data.test["path"]) if str(p).lower().endswith(DICOM_EXTS)]
    if paths:
        from kit.dicom import beyond_image

        lacking = beyond_image(paths)
        needs += [Need(package, f"DICOM {', '.join(lacking)}") for package in DICOM if lacking]
    return needs


def plan(needs, dataset, backbones):
    """What a kernel bundle carries of its needs (its runtime.json): the needs, the wheels
    dataset they come from, and whether a keras-hub backbone runs (keras-hub is held too)."""
    return {"needs": [asdict(n) for n in needs], "wheels": dataset,
            "hub": any(BACKBONES[name].hub for name in backbones)}


def start(path, log=print):
    """A kernel's first step (kit.cli.run_bundle), before anything heavy is imported: what the
    bundle's runtime.json (`path`) says it needs, installed; then the versions it runs on, said
    and held to the versions CI tests."""
    carried = json.loads(Path(path).read_text())
    provide([Need(**n) for n in carried["needs"]], carried["wheels"], log)
    check_versions(carried["hub"], log)


def provide(needs, dataset, log=print):
    """Each need that is not installed, from the attached wheels dataset (`dataset`, owner/slug),
    offline, into a folder put first on sys.path; not attached: one line naming what is missing
    and the dataset."""
    missing = [n for n in needs if not _has(n.package, n.at_least)]
    if not missing:
        return
    wheels = pins(WHEELS)
    names = sorted({n.package for n in missing})
    why = "; ".join(dict.fromkeys(n.why for n in missing))
    what = f"{', '.join(names)} ({why}) is not in Kaggle's image, and the wheels dataset {dataset}"
    folder = search_inputs(lambda folder, files: MANIFEST in files, what,
                           "make wheels and make publish-wheels make it (once), and make kernel and make "
                           "inference-kernel attach it")
    target = tempfile.mkdtemp(prefix="kit-packages-")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                           "--disable-pip-version-check", "--find-links", str(folder), "--target", target,
                           *(f"{name}=={wheels[name]}" for name in names)], capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise KitError(f"cannot install {', '.join(names)} from {folder}: {last} (make wheels and make "
                       f"publish-wheels again?)")
    sys.path.insert(0, target)
    importlib.invalidate_caches()
    short = [n for n in missing if not _has(n.package, n.at_least)]
    if short:
        need = short[0]
        raise KitError(f"{folder} holds {need.package} {wheels[need.package]}; this kernel needs "
                       f"{need.at_least} or newer ({need.why}): make wheels and make publish-wheels again")
    log(f"installed from {folder}: {', '.join(f'{name} {wheels[name]}' for name in names)} ({why})")


def _has(package, at_least):
    found = version(package)
    return found is not None and (not at_least or Version(found) >= Version(at_least))


def version(package):
    """The installed version of a distribution, or None."""
    builds = ("tensorflow-cpu", "tensorflow-tpu", "tensorflow-intel")  # TensorFlow under other names
    for name in (package, *builds) if package == "tensorflow" else (package,):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check_versions(hub, log=print):
    """Say what the kernel runs on; below the versions CI tests, one line saying what to choose."""
    found = {"python": platform.python_version(), **{name: version(name) for name in HELD}}
    log("runs on " + ", ".join(f"{name} {v or '(none)'}" for name, v in found.items()))
    floors = {"python": PYTHON, **{name: pins(IMAGE)[name] for name in HELD}}
    for name, floor in floors.items():
        if name == "keras-hub" and not hub:
            continue
        if found[name] is None or Version(found[name]) < Version(floor):
            raise KitError(f"this kernel needs {name} >= {floor}; the notebook's environment has "
                           f"{found[name] or 'none'}: choose the latest environment in the notebook's "
                           f"settings")
