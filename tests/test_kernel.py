"""Kaggle kernels: the kit inside one (a fake /kaggle), self-contained bundles, offline weights,
and the fan-out through the real client against the stand-in server."""
import json
import os
import shutil
import subprocess
import sys

import h5py
import keras
import numpy as np
import pandas as pd
import pytest

from kit import KitError
from kit.backbones import BACKBONES
from kit.config import load_spec
from kit.env import resolve_weights
from kit.kaggle.bundle import build_bundle
from kit.kaggle.client import kaggle_user
from kit.runs import run_of
from tests.helpers import ROOT, kernel_env, spec_file, write_competition

KEY = "0123456789abcdef0123456789abcdef"  # the stand-in server's dummy token key


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch):
    """/kaggle as a kernel sees it: the tiny competition attached read-only, a working folder."""
    root = tmp_path / "kaggle"
    write_competition(root / "input" / "competitions" / "tiny")
    (root / "working").mkdir()
    monkeypatch.setenv("KIT_KAGGLE_ROOT", str(root))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    return root


def test_inside_a_kernel_data_comes_from_input_and_runs_go_to_working(fake_kaggle, tmp_path):
    spec = load_spec(str(spec_file(tmp_path, data_dir="", runs_dir="runs")))
    assert spec.data_path == fake_kaggle / "input" / "competitions" / "tiny"
    assert spec.runs_path == fake_kaggle / "working" / "runs" / "tiny"
    kept = load_spec(str(spec_file(tmp_path)))  # folders the spec names are kept
    assert kept.data_path == tmp_path / "data"
    shutil.move(fake_kaggle / "input" / "competitions" / "tiny", fake_kaggle / "input" / "tiny")
    assert load_spec(str(spec_file(tmp_path, data_dir=""))).data_path == fake_kaggle / "input" / "tiny"
    shutil.move(fake_kaggle / "input" / "tiny", fake_kaggle / "input" / "something-else")
    with pytest.raises(KitError, match="competition tiny is not attached to this kernel: .*attached: something-else"):
        load_spec(str(spec_file(tmp_path, data_dir="")))


def _legacy_notop_file(path, backbone="vgg16", size=32):
    """A weights file in the format of Keras' own ImageNet notop downloads (legacy HDF5)."""
    from keras.src.legacy.saving import legacy_h5_format

    base = getattr(keras.applications, BACKBONES[backbone].constructor)(include_top=False, weights=None,
                                                                          input_shape=(size, size, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)
    return path


def test_imagenet_weights_come_from_the_keras_cache_or_an_attached_dataset(fake_kaggle, tmp_path, monkeypatch):
    entry = BACKBONES["vgg16"]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert resolve_weights("imagenet", entry) == "imagenet"  # nowhere: Keras downloads it
    attached = fake_kaggle / "input" / "keras-pretrained-models" / entry.weights_file
    attached.parent.mkdir(parents=True)
    attached.write_bytes(b"h5")
    assert resolve_weights("imagenet", entry) == str(attached)
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / entry.weights_file).write_bytes(b"h5")
    assert resolve_weights("imagenet", entry) == "imagenet"  # cached: Keras loads it offline
    assert resolve_weights("/some/file.h5", entry) == "/some/file.h5" and resolve_weights(None, entry) is None


def _offline_error(fake_kaggle, tmp_path, backbone, **keys):
    """The one line `kit train` prints in an offline kernel without the backbone's weights."""
    spec = spec_file(tmp_path, data_dir="", runs_dir="runs", weights="imagenet", **keys)
    result = subprocess.run([sys.executable, "-m", "kit", "train", f"competition={spec}", f"backbone={backbone}"],
                            cwd=fake_kaggle / "working", env={**kernel_env(fake_kaggle, tmp_path), "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    return result.stderr.strip()


def test_offline_without_weights_is_one_clear_line_saying_what_to_attach(fake_kaggle, tmp_path):
    line = _offline_error(fake_kaggle, tmp_path, "vgg16")
    assert line.startswith("error: vgg16: no ImageNet weights: vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 "
                           "is not in the Keras cache") and "Attach a dataset holding it" in line
    assert str(fake_kaggle / "input") in line and len(line.splitlines()) == 1


def test_a_keras_hub_preset_comes_from_an_attached_kaggle_model_or_kagglehubs_cache(fake_kaggle, tmp_path,
                                                                                   monkeypatch):
    entry = BACKBONES["dinov2_small"]
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    assert resolve_weights("imagenet", entry) == "imagenet"  # nowhere: keras-hub downloads it
    cached = tmp_path / "kagglehub" / "models" / "keras" / "dinov2" / "keras" / "dinov2_small" / "1"
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    assert resolve_weights("imagenet", entry) == str(cached)
    for attached in (fake_kaggle / "input" / "dinov2" / "keras" / "dinov2_small" / "1",
                     fake_kaggle / "input" / "models" / "keras" / "dinov2" / "keras" / "dinov2_small" / "1"):
        attached.mkdir(parents=True)
        (attached / "config.json").write_text("{}")
        assert resolve_weights("imagenet", entry) == str(attached)
        shutil.rmtree(attached)
    other = fake_kaggle / "input" / "dinov2" / "keras" / "dinov2_base" / "1"  # another variation
    other.mkdir(parents=True)
    (other / "config.json").write_text("{}")
    assert resolve_weights("imagenet", entry) == str(cached)


@pytest.mark.slow
def test_offline_without_a_keras_hub_preset_names_the_kaggle_model_to_attach(fake_kaggle, tmp_path):
    line = _offline_error(fake_kaggle, tmp_path, "dinov2_small", image_size=224)
    assert line.startswith("error: dinov2_small: no pretrained weights: the Kaggle Model "
                           "keras/dinov2/keras/dinov2_small/1 is not under") and "Attach it" in line
    assert len(line.splitlines()) == 1


def test_a_keras_hub_kernel_attaches_its_kaggle_model(tmp_path):
    write_competition(tmp_path / "data")
    meta = json.loads((build_bundle(load_spec(str(spec_file(tmp_path, weights="imagenet", image_size=224))),
                                    "dinov2_small", 0, "tester") / "kernel-metadata.json").read_text())
    assert meta["model_sources"] == ["keras/dinov2/keras/dinov2_small/1"] and meta["dataset_sources"] == []
    scratch = json.loads((build_bundle(load_spec(str(spec_file(tmp_path, weights=None))), "dinov2_small", 0,
                                       "tester") / "kernel-metadata.json").read_text())
    assert scratch["model_sources"] == []  # random init: nothing to attach


def test_kaggle_user_for_the_kernel_id(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    with pytest.raises(KitError, match="no Kaggle user name for the kernel id: give user=<your Kaggle name>"):
        kaggle_user()
    (tmp_path / "kaggle.json").write_text(json.dumps({"username": "from-file", "key": KEY}))
    assert kaggle_user() == "from-file"
    monkeypatch.setenv("KAGGLE_USERNAME", "from-env")
    assert kaggle_user() == "from-env" and kaggle_user("given") == "given"


def test_bundle_metadata_is_push_ready_and_carries_no_credentials(tmp_path, monkeypatch):
    write_competition(tmp_path / "data")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    spec = load_spec(str(spec_file(tmp_path, kernel_datasets=["someone/keras-pretrained-models"])))
    folder = build_bundle(spec, "vgg16", 1, "tester")
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta == {
        "id": "tester/tiny-vgg16-fold1", "title": "tiny vgg16 fold1", "code_file": "kernel.py",
        "language": "python", "kernel_type": "script", "is_private": True, "enable_gpu": True,
        "enable_tpu": False, "enable_internet": False, "dataset_sources": ["someone/keras-pretrained-models"],
        "competition_sources": ["tiny"], "kernel_sources": [], "model_sources": []}
    text = "".join(p.read_text() for p in folder.iterdir())
    assert KEY not in text and "tester/" in text
    assert "'kit/train.py'" in text and "'kit/bench/bench.py'" not in text  # only what a kernel runs
    assert "cache_dir: /tmp/kit-cache" in text  # not in /kaggle/working, the kernel's 20 GB output
    with pytest.raises(KitError, match="weights: .* is a local file a kernel cannot see"):
        build_bundle(load_spec(str(spec_file(tmp_path, weights=str(folder / "kernel.py")))), "vgg16", 0, "tester")


@pytest.mark.slow
def test_the_bundle_runs_as_a_kernel_with_only_its_embedded_code(tmp_path):
    """Built here, then run in a simulated kernel (a fake /kaggle, no network, no credentials):
    the embedded kit trains the fold on the attached data with the folds made here."""
    write_competition(tmp_path / "data")
    spec = load_spec(str(spec_file(tmp_path, weights="imagenet", schedule=[
        {"name": "head", "trainable": "none", "epochs": 1, "lr": 0.01, "patience": 0}])))
    folder = build_bundle(spec, "vgg16", 1, "tester")
    root = tmp_path / "kaggle"
    shutil.copytree(tmp_path / "data", root / "input" / "tiny")
    _legacy_notop_file(root / "input" / "keras-pretrained-models" / BACKBONES["vgg16"].weights_file)
    (root / "working").mkdir()
    script = shutil.copy(folder / "kernel.py", tmp_path / "elsewhere.py")  # no repo beside it
    result = subprocess.run([sys.executable, script], cwd=root / "working", env=kernel_env(root, tmp_path),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    home = result.stdout.splitlines()[0].removeprefix("kit from ")
    assert not home.startswith(str(ROOT)) and "/kit-" in home  # the embedded copy, not this repo
    run = root / "working" / "runs" / "tiny" / "vgg16" / "fold1"
    assert (run / "test.csv").is_file() and (run / "oof.csv").is_file() and (run / "model.keras").is_file()
    assert "keras-pretrained-models" in (run / "log.txt").read_text()  # the attached weights were used
    assert (root / "working" / "runs" / "tiny" / "folds.csv").read_text() == (spec.runs_path / "folds.csv").read_text()
    oof_ids = set(pd.read_csv(run / "oof.csv", dtype=str)["id"])
    folds = pd.read_csv(spec.runs_path / "folds.csv", dtype=str)
    assert oof_ids == set(folds.loc[folds["fold"] == "1", "id"])
    assert not any(KEY in p.read_text(errors="ignore") for p in run.rglob("*") if p.is_file())


def _finished_run(folder, ids, test_ids):
    folder.mkdir(parents=True)
    pd.DataFrame({"id": ids, "a": 0.7, "b": 0.3}).to_csv(folder / "oof.csv", index=False)
    pd.DataFrame({"id": test_ids, "a": 0.6, "b": 0.4}).to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"epoch": [1], "phase": ["head"], "lr": [0.01], "loss": [0.7], "accuracy": [0.5],
                  "val_loss": [0.69], "val_accuracy": [0.5]}).to_csv(folder / "history.csv", index=False)


def test_fan_out_push_status_and_collect_through_the_real_client(kaggle_server, tmp_path, capsys):
    write_competition(tmp_path / "data")
    spec = load_spec(str(spec_file(tmp_path, backbones=["vgg16"])))
    from kit.kaggle.remote import collect, push_all, status
    push_all(spec, "tester")
    saves = [body for method, body, _ in kaggle_server.calls if method == "SaveKernel"]
    assert [b["slug"] for b in saves] == ["tester/tiny-vgg16-fold0", "tester/tiny-vgg16-fold1"]
    assert saves[0]["enableInternet"] is False and saves[0]["competitionDataSources"] == ["tiny"]
    assert saves[0]["text"] == (spec.runs_path / "kernels" / "vgg16-fold0" / "kernel.py").read_text()
    assert saves[0]["language"] == "python" and saves[0]["kernelType"] == "script"

    states = {"tiny-vgg16-fold0": ("COMPLETE", ""), "tiny-vgg16-fold1": ("RUNNING", "")}
    kaggle_server.replies["GetKernelSessionStatus"] = lambda body: (
        200, {"status": states[body["kernelSlug"]][0], "failureMessage": states[body["kernelSlug"]][1]}, {})
    status(spec)
    assert "vgg16/fold0  tester/tiny-vgg16-fold0  COMPLETE" in capsys.readouterr().out

    from kit.data import load_data
    from kit.folds import load_folds
    data = load_data(spec)
    fold_of = load_folds(spec, data)
    made = tmp_path / "kernel-output"
    _finished_run(made / "runs" / "tiny" / "vgg16" / "fold0", data.train["id"][fold_of == 0], data.test["id"])
    files = [p.relative_to(made).as_posix() for p in made.rglob("*") if p.is_file()]
    for name in files:
        kaggle_server.files[f"/out/{name}"] = (made / name).read_bytes()
    kaggle_server.replies["ListKernelSessionOutput"] = lambda body: (200, {
        "files": [{"url": f"http://localhost/out/{n}", "fileName": n} for n in files] if body["kernelSlug"].endswith("0") else [],
        "log": json.dumps([{"stream_name": "stderr", "time": 1.0, "data": "Traceback ...\nValueError: boom\n"}])}, {})
    collect(spec)
    run = run_of(spec, "vgg16", 0).path
    assert (run / "oof.csv").read_bytes() == (made / "runs/tiny/vgg16/fold0/oof.csv").read_bytes()
    assert "vgg16/fold1: RUNNING" in capsys.readouterr().out

    states["tiny-vgg16-fold1"] = ("ERROR", "Your notebook hit an error")
    with pytest.raises(KitError) as e:
        collect(spec)
    assert "tester/tiny-vgg16-fold1 ended in error: Your notebook hit an error" in str(e.value)
    assert "  | ValueError: boom" in str(e.value)
    assert (run / "oof.csv").is_file()  # a finished fold is never lost


def test_a_refused_push_is_one_clear_line(kaggle_server, tmp_path):
    write_competition(tmp_path / "data")
    spec = load_spec(str(spec_file(tmp_path)))
    kaggle_server.replies["SaveKernel"] = (200, {"ref": "", "url": "", "error": "Notebook title is taken"}, {})
    from kit.kaggle.remote import push
    with pytest.raises(KitError, match="Kaggle refused the kernel push of .*: Notebook title is taken"):
        push(spec, "vgg16", 0, "tester")
    kaggle_server.replies["SaveKernel"] = (200, {"ref": "r", "url": "u", "invalidDatasetSources": ["x/y"]}, {})
    with pytest.raises(KitError, match="Kaggle does not know these kernel inputs: x/y"):
        push(spec, "vgg16", 0, "tester")


@pytest.mark.kaggle_image
def test_a_kernel_trains_top2_on_the_cached_prefix_on_kaggles_image_and_its_run_works_here(
        tmp_path, kaggle_python, kaggle_server, monkeypatch):
    """A training kernel run by the Python of Kaggle's image (older keras, TensorFlow, pandas) on a
    stand-in /kaggle: Xception's top:2 on the frozen prefix's cached outputs, to a complete run
    folder; make collect brings it here (the stand-in server serves the kernel's output), its model
    loads and predicts here, and make ensemble takes it with a fold trained here."""
    from kit.decode import read_rgb
    from kit.kaggle.remote import collect
    from kit.pretrained import load_model
    from kit.submission import ensemble_submission
    from kit.train import run_fold

    write_competition(tmp_path / "data")
    spec = load_spec(str(spec_file(tmp_path, backbones=["xception"], augment=[], metric="log_loss", schedule=[
        {"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-3, "patience": 0},
        {"name": "finetune", "trainable": "top:2", "epochs": 1, "lr": 1e-4, "patience": 0}])))
    folder = build_bundle(spec, "xception", 0, "tester")
    root = tmp_path / "kaggle"
    shutil.copytree(tmp_path / "data", root / "input" / "tiny")
    (root / "working").mkdir()
    script = shutil.copy(folder / "kernel.py", tmp_path / "notebook.py")
    done = subprocess.run([kaggle_python, script], cwd=root / "working", env=kernel_env(root, tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "runs on python 3.12" in done.stdout and ", keras 3.13.2, " in done.stdout
    made = root / "working"
    log = (made / "runs" / "tiny" / "xception" / "fold0" / "log.txt").read_text()
    assert "phase finetune: base trainable top:2" in log and "on the frozen prefix's cached outputs" in log

    run_fold(spec, "xception", 1)  # the other fold, here
    files = [p.relative_to(made).as_posix() for p in made.rglob("*") if p.is_file()]  # what Kaggle keeps of a run
    for name in files:
        kaggle_server.files[f"/out/{name}"] = (made / name).read_bytes()
    kaggle_server.replies["GetKernelSessionStatus"] = (200, {"status": "COMPLETE"}, {})
    kaggle_server.replies["ListKernelSessionOutput"] = (200, {
        "files": [{"url": f"http://localhost/out/{n}", "fileName": n} for n in files], "log": "[]"}, {})
    collect(spec)
    run = run_of(spec, "xception", 0)
    assert run.finished() and run.model.read_bytes() == (made / "runs/tiny/xception/fold0/model.keras").read_bytes()
    model = load_model(run.model)  # saved by keras 3.13.2, loaded by this one
    test = pd.read_csv(run.test, dtype={"id": str})
    x = np.stack([read_rgb(spec.data_path / "test" / f"{i}.png", 71) for i in test["id"]]).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), test[["a", "b"]].to_numpy(), atol=1e-5)
    monkeypatch.chdir(tmp_path)  # submissions/ of the ensemble
    submission = pd.read_csv(ensemble_submission(spec, "mean"), dtype={"id": str})
    assert submission["id"].tolist() == test["id"].tolist() and np.allclose(submission[["a", "b"]].sum(1), 1)


def test_the_next_commands_hint_repeats_the_options_given(tmp_path):
    """make push builds the bundle again from its options: a hint without the overrides (or with the
    slug of a spec given as a path) would push another kernel, or none."""
    write_competition(tmp_path / "data")
    spec = spec_file(tmp_path)
    given = [f"competition={spec}", "fold=1", "backbone=vgg16", "epochs_head=2", "user=tester"]
    done = subprocess.run([sys.executable, "-m", "kit", "kernel", *given], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(f"push with make push {' '.join(given)}")
