"""Kaggle's image as the runtime (kit/runtime.py): what kernels import, what they need beyond the
image and how they get it offline (the wheels dataset), the versions they hold the notebook to.
Run on both environments: the kit's venv (make test) and Kaggle's image's (make test-kaggle)."""
import ast
import base64
import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

import kit.runtime
from kit import KitError
from kit.backbones import BACKBONES
from kit.kaggle.bundle import kernel_modules, module_file
from kit.runtime import DICOM, IMAGE, WHEELS, Need, check_versions, kernel_needs, pins, provide, version
from tests.helpers import ROOT

# Imported by kit modules a kernel carries, inside the one function that needs them, and never
# reached in a kernel: why each may be missing from Kaggle's image.
NEVER_IN_A_KERNEL = {"iterstrat": ("iterative-stratification", "multilabel folds are made where the kit is "
                                  "installed; kernels read the folds.csv in their bundle")}


def _imports(module):
    """(eager, lazy): the top-level names of what `module` imports outside and inside functions."""
    tree = ast.parse(module_file(module).read_text())
    lazy = {id(node) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.Lambda))
            for node in ast.walk(f)}
    found = ({}, {})
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
        for name in names:
            root = name.split(".")[0]
            if root != "kit" and root not in sys.stdlib_module_names:
                found[id(node) in lazy].setdefault(root, module)
    return found


@pytest.mark.parametrize("command", ["kit.train", "kit.kaggle.infer"])
def test_a_kernel_imports_only_what_kaggles_image_has(command):
    """Each module the bundle carries, read: what it imports is pinned in kit/kaggle-image.txt."""
    image, of = pins(IMAGE), importlib.metadata.packages_distributions()
    eager, lazy = {}, {}
    for module in kernel_modules(command):
        now, later = _imports(module)
        eager.update(now)
        lazy.update(later)
    assert {"numpy", "pandas", "keras", "tensorflow"} <= set(eager) and "pydicom" in lazy  # the sources are read
    for root, module in {**lazy, **eager}.items():
        if root in NEVER_IN_A_KERNEL:
            assert root in lazy and root not in eager, f"{module} imports {root} up front"
            continue
        dists = [kit.runtime.canonical(d) for d in of.get(root, [])]
        assert dists, f"{module} imports {root}, which no installed distribution provides"
        assert any(d in image for d in dists), f"{module} imports {root} ({', '.join(dists)}), which Kaggle's image lacks"


def test_the_pinned_files_agree_with_the_code_and_the_kits_own_venv():
    image, wheels = pins(IMAGE), pins(WHEELS)
    assert set(DICOM) | {"keras-hub"} == set(wheels)  # every package the code asks the wheels for, and no other
    assert not set(DICOM) & set(image) and Version(wheels["keras-hub"]) > Version(image["keras-hub"])
    for name, pin in wheels.items():  # the kit's venv has them (CI tests them there); the image has none
        assert version(name) in (pin, None) or name == "keras-hub" and version(name) == image[name], name
    for entry in BACKBONES.values():
        assert not entry.hub_version or Version(entry.hub_version) <= Version(wheels["keras-hub"])


def test_pyprojects_lower_bounds_are_the_versions_ci_tests():
    text = (ROOT / "pyproject.toml").read_text()
    bounds = dict(re.findall(r'^\s*"([A-Za-z0-9_.-]+)>=([0-9][^,"]*)', text, re.M))
    assert {"tensorflow", "keras", "pandas", "scikit-learn", "kaggle", "numpy"} <= set(bounds)
    image = pins(IMAGE)
    for name, bound in bounds.items():
        pin, here = image.get(kit.runtime.canonical(name)), version(name)
        if name in {dist for dist, _ in NEVER_IN_A_KERNEL.values()}:  # the kit's venv only
            assert here is None or Version(bound) == Version(here), f"{name}>={bound}: CI tests {here}"
            continue
        assert pin is not None, f"{name} is a dependency Kaggle's image lacks"
        assert Version(bound) <= Version(pin), f"{name}>={bound}: Kaggle's image has {pin}"
        if here != pin:  # the kit's own venv: where it is older than the image, the bound is its version
            assert Version(bound) == min(Version(pin), Version(here)), f"{name}>={bound}: CI tests {pin} and {here}"
    assert re.search(r'requires-python = ">=(\S+)"', text)[1] == kit.runtime.PYTHON


def test_the_registry_says_which_keras_hub_first_has_each_class():
    """Checked on keras-hub 0.29 (the kit's venv) and 0.26 (Kaggle's image), where Swin is missing."""
    keras_hub = pytest.importorskip("keras_hub")
    installed = Version(version("keras-hub"))
    for name, entry in BACKBONES.items():
        if entry.hub:
            has = hasattr(keras_hub.models, entry.constructor)
            assert has == (not entry.hub_version or installed >= Version(entry.hub_version)), name


def _data(paths):
    import pandas as pd

    from kit.data import Data
    frame = pd.DataFrame({"id": [Path(p).stem for p in paths], "path": [str(p) for p in paths]})
    return Data(["a", "b"], frame, None, None, frame.iloc[:0])


def test_a_kernel_needs_a_newer_keras_hub_for_swin_and_decoders_for_jpeg_lossless(tmp_path):
    plain = _data([])
    assert kernel_needs(["vgg16", "dinov2_small", "vit_b16"], plain) == []
    [need] = kernel_needs(["swin_tiny", "vgg16"], plain)
    assert need == Need("keras-hub", "swin_tiny: keras_hub.models.SwinTransformerBackbone is new in keras-hub "
                                     "0.29.1", "0.29.1")
    pytest.importorskip("gdcm", reason="the files are encoded with GDCM, which Kaggle's image lacks")
    from tests import layouts
    layouts.dicom(tmp_path / "mixed", n_train=8, n_test=4)  # plain, MONOCHROME1, JPEG 2000, RLE: the image reads them
    assert kernel_needs(["vgg16"], _data(sorted((tmp_path / "mixed").rglob("*.dcm")))) == []
    layouts.dicom(tmp_path / "lossless", n_train=4, n_test=2, jpeg_lossless=True)
    needs = kernel_needs(["vgg16"], _data(sorted((tmp_path / "lossless").rglob("*.dcm"))))
    assert [n.package for n in needs] == list(DICOM)
    assert needs[0].why == "DICOM JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])"


def _wheel(folder, name, version, code):
    """A minimal wheel of one module `name` (what pip installs from a wheels dataset)."""
    module, dist = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}"
    files = {f"{module}.py": code, f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: kit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
                     f"{len(text.encode())}\n" for path, text in files.items()) + f"{dist}.dist-info/RECORD,,\n"
    path = folder / f"{dist}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name_, text in {**files, f"{dist}.dist-info/RECORD": record}.items():
            z.writestr(name_, text)
    return path


@pytest.fixture
def fake_wheels(tmp_path, monkeypatch):
    """kit/kaggle-wheels.txt naming one package no environment has, and a folder of its wheel."""
    here = tmp_path / "kit"
    here.mkdir()
    (here / WHEELS).write_text("kit-test-decoder==1.2\n")
    (here / IMAGE).write_text((kit.runtime.HERE / IMAGE).read_text())
    monkeypatch.setattr(kit.runtime, "HERE", here)
    monkeypatch.setattr(sys, "path", list(sys.path))  # what provide() puts first goes with the test
    _wheel(tmp_path / "wheels", "kit-test-decoder", "1.2", "ANSWER = 42\n")
    return tmp_path / "wheels"


def test_a_kernel_installs_what_it_needs_from_the_attached_wheels_dataset_offline(fake_wheels, tmp_path, monkeypatch):
    root = tmp_path / "kaggle"
    (root / "input" / "competitions" / "tiny").mkdir(parents=True)
    monkeypatch.setenv("KIT_KAGGLE_ROOT", str(root))
    need = Need("kit-test-decoder", "DICOM JPEG Lossless")
    with pytest.raises(KitError) as e:  # not attached: one line naming the package, why and the dataset
        provide([need], "tester/kit-wheels")
    assert str(e.value).startswith("kit-test-decoder (DICOM JPEG Lossless) is not in Kaggle's image, and the wheels "
                                   "dataset tester/kit-wheels is not attached to this kernel: nothing under ")
    assert "(attached: competitions/tiny); make wheels and make publish-wheels make it" in str(e.value)
    mounted = root / "input" / "datasets" / "tester" / "kit-wheels"
    mounted.mkdir(parents=True)
    for wheel in fake_wheels.iterdir():
        (mounted / wheel.name).write_bytes(wheel.read_bytes())
    (mounted / kit.runtime.MANIFEST).write_text("{}")
    said = []
    provide([need], "tester/kit-wheels", said.append)
    assert importlib.import_module("kit_test_decoder").ANSWER == 42 and version("kit-test-decoder") == "1.2"
    assert said == [f"installed from {mounted}: kit-test-decoder 1.2 (DICOM JPEG Lossless)"]
    provide([need], "tester/kit-wheels", said.append)  # there now: nothing to do
    assert len(said) == 1
    with pytest.raises(KitError, match=r"kit-wheels holds kit-test-decoder 1\.2; this kernel needs 1\.3 or newer "
                                       r"\(a newer one\): make wheels and make publish-wheels again"):
        provide([Need("kit-test-decoder", "a newer one", "1.3")], "tester/kit-wheels")


def test_a_kernel_says_what_it_runs_on_and_refuses_an_older_environment_in_one_line(monkeypatch):
    said = []
    check_versions(True, said.append)
    assert said == [f"runs on python {sys.version.split()[0]}, tensorflow {version('tensorflow')}, keras "
                    f"{version('keras')}, keras-hub {version('keras-hub')}"]
    floor = pins(IMAGE)["keras"]
    monkeypatch.setattr(kit.runtime, "version", lambda name: {"keras": "3.10.0"}.get(name, "99"))
    with pytest.raises(KitError) as e:
        check_versions(False, said.append)
    assert str(e.value) == (f"this kernel needs keras >= {floor}; the notebook's environment has 3.10.0: choose the "
                            f"latest environment in the notebook's settings")
    monkeypatch.setattr(kit.runtime, "version", lambda name: {"keras-hub": "0.21.1"}.get(name, "99"))
    check_versions(False, said.append)  # no keras-hub backbone: its version does not matter
    with pytest.raises(KitError, match=r"needs keras-hub >= 0\.26\.0; the notebook's environment has 0\.21\.1"):
        check_versions(True, said.append)


def test_make_wheels_fills_the_dataset_folder_and_publish_wheels_sends_it(fake_wheels, tiny, kaggle_server):
    from kit.kaggle.remote import build_wheels, publish_wheels
    spec = tiny()
    with pytest.raises(KitError, match="no wheels at .*kit-wheels: make wheels first"):
        publish_wheels(spec)
    folder = build_wheels(spec, "tester", source=fake_wheels)  # pip download, from a folder: no network
    assert folder == Path(spec.runs_dir) / "kit-wheels"
    wheel = folder / "kit_test_decoder-1.2-py3-none-any.whl"
    manifest = json.loads((folder / kit.runtime.MANIFEST).read_text())
    assert manifest == {"python": "3.12", "packages": {"kit-test-decoder": "1.2"},
                        "files": {wheel.name: hashlib.sha256(wheel.read_bytes()).hexdigest()}}
    meta = json.loads((folder / "dataset-metadata.json").read_text())
    assert meta["id"] == "tester/kit-wheels" and meta["licenses"] == [{"name": "other"}]
    (fake_wheels / wheel.name).unlink()
    with pytest.raises(KitError, match="cannot download the wheels of kit/kaggle-wheels.txt: .*kit-test-decoder"):
        build_wheels(spec, "tester", source=fake_wheels)
    assert wheel.is_file()  # the last good folder is kept
    kaggle_server.replies.update({
        "GetDatasetStatus": (404, {"code": 404, "message": "Dataset not found"}, {}),
        "StartBlobUpload": lambda body: (200, {"token": f"t-{body['name']}", "createUrl": f"http://localhost/upload/{body['name']}"}, {}),
        "CreateDataset": (200, {"ref": "tester/kit-wheels", "url": "u"}, {})})
    publish_wheels(spec)
    create = next(body for method, body, _ in kaggle_server.calls if method == "CreateDataset")
    assert (create["ownerSlug"], create["slug"]) == ("tester", "kit-wheels")
    assert kaggle_server.uploads[f"/upload/{wheel.name}"] == wheel.read_bytes()


def test_decoding_imports_on_an_opencv_without_its_logging_module():
    """A notebook pinned to an older Kaggle image has OpenCV 4.12, without cv2.utils.logging."""
    code = "import cv2; del cv2.utils.logging; import kit.decode; print(kit.decode.read_rgb.__name__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "read_rgb\n", done.stderr[-2000:]


@pytest.mark.kaggle_image
def test_a_dicom_kernel_installs_its_decoders_from_the_wheels_dataset_on_kaggles_image(tmp_path, kaggle_python,
                                                                                      kaggle_wheels):
    """JPEG Lossless DICOM files, which Kaggle's image cannot decode: make kernel attaches the
    wheels dataset; the kernel, without it, stops at its start in one line; with it, installs the
    decoders offline and trains on every image."""
    from kit.config import load_spec
    from kit.kaggle.bundle import build_bundle
    from tests import layouts
    from tests.helpers import kernel_env, spec_file

    layouts.dicom(tmp_path / "data", n_train=12, n_test=4, jpeg_lossless=True)
    spec = load_spec(str(spec_file(tmp_path, task="binary", metric="log_loss", id_column="image_id", augment=[],
                                   train_dir="train_images", test_dir="test_images", schedule=[
                                       {"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-3, "patience": 0}])))
    folder = build_bundle(spec, "vgg16", 0, "tester")
    assert json.loads((folder / "kernel-metadata.json").read_text())["dataset_sources"] == ["tester/kit-wheels"]
    root = tmp_path / "kaggle"
    shutil.copytree(tmp_path / "data", root / "input" / "tiny")
    (root / "working").mkdir()
    script = shutil.copy(folder / "kernel.py", tmp_path / "notebook.py")

    def kernel():
        return subprocess.run([kaggle_python, script], cwd=root / "working", env={**kernel_env(root, tmp_path),
                              "TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=900)
    done = kernel()
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr[-3000:]
    assert done.stderr.startswith("error: pylibjpeg, pylibjpeg-openjpeg, python-gdcm (DICOM JPEG Lossless, "
                                  "Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])) is not "
                                  "in Kaggle's image, and the wheels dataset tester/kit-wheels is not attached")
    one = next((tmp_path / "data" / "test_images").iterdir())  # a hidden test set of this syntax: its one line
    said = subprocess.run([kaggle_python, "-c", f"from kit.dicom import read_dicom; read_dicom({str(one)!r})"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300).stderr.strip().splitlines()[-1]
    assert said.endswith("(1.2.840.10008.1.2.4.70): no installed decoder reads it (gdcm>=3.0.10 or pylibjpeg>=2.0 and "
                         "pylibjpeg-libjpeg>=2.1 would; in a kernel, the wheels dataset: make wheels)"), said
    shutil.copytree(kaggle_wheels, root / "input" / "datasets" / "tester" / "kit-wheels")
    done = kernel()
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = pins(WHEELS)
    assert (f"installed from {root / 'input' / 'datasets' / 'tester' / 'kit-wheels'}: pylibjpeg {wheels['pylibjpeg']}, "
            f"pylibjpeg-openjpeg {wheels['pylibjpeg-openjpeg']}, python-gdcm {wheels['python-gdcm']} (DICOM JPEG Lossless") in done.stdout
    run = root / "working" / "runs" / "tiny" / "vgg16" / "fold0"
    assert (run / "test.csv").is_file() and not (run / "skipped.csv").exists()  # every image decoded


@pytest.mark.kaggle_image
def test_swin_runs_on_kaggles_image_with_keras_hub_from_the_wheels_dataset(tmp_path, kaggle_python, kaggle_wheels):
    """keras-hub 0.26 (the image's) lacks Swin: a kernel installs 0.29.1 from the wheels dataset
    first thing; the registry's tests of Swin (its blocks, its cut) then pass on the image."""
    root = tmp_path / "kaggle"
    shutil.copytree(kaggle_wheels, root / "input" / "kit-wheels")
    env = {**os.environ, "KIT_KAGGLE_ROOT": str(root), "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    start = ("import sys; from kit.runtime import Need, provide; "
             "provide([Need('keras-hub', 'swin_tiny', '0.29.1')], 'tester/kit-wheels'); "
             "import keras_hub; print(sys.path[0], keras_hub.__version__, hasattr(keras_hub.models, 'SwinTransformerBackbone'))")
    done = subprocess.run([kaggle_python, "-c", start], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    target, hub, has = done.stdout.split()[-3:]
    assert (hub, has) == (pins(WHEELS)["keras-hub"], "True") and "installed from" in done.stdout
    tests = subprocess.run([kaggle_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not kaggle_image", "-rs",
                            "-k", "swin_tiny and (cut_is_below or top_k_opens)", "tests/test_prefix.py", "tests/test_backbones.py"],
                           cwd=ROOT, env={**env, "PYTHONPATH": f"{target}:{ROOT}"}, capture_output=True, text=True, timeout=900)
    assert tests.returncode == 0 and "2 passed" in tests.stdout and "skipped" not in tests.stdout, tests.stdout[-3000:]


def test_a_keras_hub_class_this_keras_hub_lacks_is_one_line(monkeypatch):
    """Swin on Kaggle's image (keras-hub 0.26), outside a kernel that installs a newer one."""
    keras_hub = pytest.importorskip("keras_hub")
    from kit.pretrained import build_base
    monkeypatch.delattr(keras_hub.models, "SwinTransformerBackbone", raising=False)
    with pytest.raises(KitError, match=r"swin_tiny: keras_hub.models.SwinTransformerBackbone is new in keras-hub "
                                       r"0\.29\.1; this Python has .*: pip install 'keras-hub>=0\.29\.1'"):
        build_base("swin_tiny", 224, None)
