"""Code competitions: the ensemble released as a flat folder, published as a Kaggle dataset, run
offline by an inference kernel on a hidden test set, and submitted as a kernel version."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit import KitError
from kit.ensemble import combine, labels_of, load_members
from kit.kaggle.bundle import build_inference_bundle
from kit.kaggle.release import MANIFEST, build_release, find_release, load_release
from kit.runs import run_of
from tests.helpers import image, kernel_env

KEY = "0123456789abcdef0123456789abcdef"  # the stand-in server's dummy token key
# What TensorFlow's C++ runtime prints as it starts, before TF_CPP_MIN_LOG_LEVEL takes hold
TF_START_UP = ("absl::InitializeLog", "oneDNN", "TF_ENABLE_ONEDNN_OPTS", "cuda", "This TensorFlow binary")


def _tensorflow_lines(stderr):
    return [line for line in stderr.splitlines() if any(said in line for said in TF_START_UP)]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_release_is_flat_checksummed_credential_free_and_the_same_bytes_when_rebuilt(fake_runs, monkeypatch):
    spec, data, write = fake_runs
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    for fold in (0, 1):
        write("vgg16", fold, 0.1, seed=fold)
        write("resnet50", fold, 0.8, seed=5 + fold)
    folder = build_release(spec, "mean", "tester")
    files = _files(folder)
    assert sorted(files) == ["dataset-metadata.json", MANIFEST, "recipe.json", "resnet50-fold0.weights.npz",
                             "resnet50-fold1.weights.npz", "spec.yaml", "vgg16-fold0.weights.npz",
                             "vgg16-fold1.weights.npz"]
    with np.load(folder / "vgg16-fold1.weights.npz") as saved:  # the run's model's weights, in order
        kept = [saved[f"w{k:04d}"] for k in range(len(saved.files) - 1)]
    for a, b in zip(kept, keras.saving.load_model(run_of(spec, "vgg16", 1).model).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    recipe = json.loads(files["recipe.json"])
    assert [(m["name"], m["weight"]) for m in recipe["members"]] == [("vgg16", 0.5), ("resnet50", 0.5)]
    assert recipe["members"][0]["runs"] == [
        {"member": "vgg16", "fold": k, "file": f"vgg16-fold{k}.weights.npz", "backbone": "vgg16", "image_size": 32,
         "model_sha256": hashlib.sha256(run_of(spec, "vgg16", k).model.read_bytes()).hexdigest()} for k in (0, 1)]
    assert recipe["classes"] == ["a", "b"] and recipe["submission"]["columns"] == ["id", "a", "b"]
    assert json.loads(files["dataset-metadata.json"]) == {
        "id": "tester/tiny-models", "title": "tiny models", "licenses": [{"name": "CC0-1.0"}]}
    assert not any(KEY.encode() in b for b in files.values())
    release = load_release(folder)  # every checksum holds
    assert release.recipe == recipe and release.spec.slug == "tiny" and release.spec.weights is None
    assert _files(build_release(spec, "mean", "tester")) == files  # rebuilt: the same bytes
    weighted = json.loads((build_release(spec, "weighted", "tester") / "recipe.json").read_text())
    members, _ = load_members(spec, data)
    weights = combine(spec, members, labels_of(data), "weighted").params["weights"]
    assert weights == [1.0, 0.0]  # the noisy member adds nothing: left out, and said so
    assert [(m["name"], m["weight"]) for m in weighted["members"]] == [("vgg16", 1.0)]
    assert "resnet50 (weight 0)" in weighted["missing"] and not (folder / "resnet50-fold0.weights.npz").exists()
    only = build_release(spec, "mean", "tester", members="vgg16")
    assert sorted(p.name for p in only.glob("*.npz")) == ["vgg16-fold0.weights.npz", "vgg16-fold1.weights.npz"]


def test_portable_weights_give_the_registrys_model_back_exactly_and_the_same_bytes(tmp_path):
    """What a release holds: no layer config (another keras may refuse it), weights in order."""
    from kit.model import build_model
    from kit.portable import load_portable, save_portable

    keras.utils.set_random_seed(3)
    model, _ = build_model("vgg16", "multiclass", 3, 32, None, 0.3)
    save_portable(model, tmp_path / "a.weights.npz")
    save_portable(model, tmp_path / "b.weights.npz")
    assert (tmp_path / "a.weights.npz").read_bytes() == (tmp_path / "b.weights.npz").read_bytes()
    keras.utils.set_random_seed(4)  # another initialisation: only the loaded weights can make them equal
    again = load_portable(tmp_path / "a.weights.npz", "vgg16", "multiclass", 3, 32)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(again.predict_on_batch(x), model.predict_on_batch(x))
    with pytest.raises(KitError, match=r"a.weights.npz holds other weights than vgg16 at 32px as this kit builds "
                                       r"it \(head/kernel \(512, 3\)\): make release again"):
        load_portable(tmp_path / "a.weights.npz", "vgg16", "binary", 2, 32)
    with pytest.raises(KitError, match="holds other weights than resnet50 at 32px as this kit builds it"):
        load_portable(tmp_path / "a.weights.npz", "resnet50", "multiclass", 3, 32)
    (tmp_path / "c.weights.npz").write_bytes(b"not a zip")
    with pytest.raises(KitError, match="c.weights.npz is not a readable weights file"):
        load_portable(tmp_path / "c.weights.npz", "vgg16", "multiclass", 3, 32)


def test_what_cannot_be_released_is_one_clear_line(fake_runs):
    spec, _, write = fake_runs
    with pytest.raises(KitError, match="no finished runs of vgg16, resnet50, xception"):
        build_release(spec, "mean", "tester")
    write("vgg16", 0, 0.1)
    with pytest.raises(KitError, match="members: resnet50 has no finished run under"):
        build_release(spec, "mean", "tester", members="vgg16,resnet50")
    with pytest.raises(KitError, match="unknown backbone 'vgg61'"):
        build_release(spec, "mean", "tester", members="vgg61")
    folder = build_release(spec, "mean", "tester")
    with pytest.raises(KitError, match="tta is fixed by the release \\(its recipe made the CV\\); only data_dir"):
        load_release(folder, {"tta": "hflip"})
    model = folder / "vgg16-fold0.weights.npz"
    model.write_bytes(model.read_bytes() + b"!")
    with pytest.raises(KitError, match="vgg16-fold0.weights.npz does not match its checksum in kit-release.json"):
        load_release(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]["vgg16-fold0.weights.npz"]  # then a damaged model would go unchecked
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(KitError, match="kit-release.json does not list vgg16-fold0.weights.npz"):
        load_release(folder)
    (folder / MANIFEST).write_text("{bad")
    with pytest.raises(KitError, match="kit-release.json is not readable JSON: a damaged release"):
        load_release(folder)
    folder = build_release(spec, "mean", "tester")  # as an older kit made it: .keras files in the recipe
    recipe = json.loads((folder / "recipe.json").read_text())
    for r in recipe["members"][0]["runs"]:
        del r["backbone"]
    (folder / "recipe.json").write_text(json.dumps(recipe))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["recipe.json"] = hashlib.sha256((folder / "recipe.json").read_bytes()).hexdigest()
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(KitError, match="release was made by an older kit .*: make release and publish it again"):
        load_release(folder)
    run = run_of(spec, "vgg16", 0).model
    run.write_bytes(run.read_bytes()[:-30])  # cut short: it would fail only where the kernel runs
    with pytest.raises(KitError, match="vgg16/fold0/model.keras is damaged .*train its fold again"):
        build_release(spec, "mean", "tester")


def test_a_release_predicts_with_the_views_its_runs_were_predicted_with(fake_runs):
    from kit.runs import run_of

    spec, _, write = fake_runs
    for fold in (0, 1):
        write("vgg16", fold, 0.1, seed=fold)
        run_of(spec, "vgg16", fold).record(tta=["hflip"], tta_augment=0)  # as make predict tta=hflip leaves it
    recipe = load_release(build_release(spec, "mean", "tester"))
    assert recipe.recipe["tta"] == {"views": ["hflip"], "augmented": 0} and recipe.spec.tta == ["hflip"]
    run_of(spec, "vgg16", 1).record(tta=["vflip"])
    with pytest.raises(KitError, match="the runs were predicted with different test-time views"):
        build_release(spec, "mean", "tester")


def test_a_kernel_finds_the_release_wherever_the_dataset_is_mounted(fake_runs, tmp_path, monkeypatch):
    spec, _, write = fake_runs
    write("vgg16", 0, 0.1)
    folder = build_release(spec, "mean", "tester")
    root = tmp_path / "kaggle"
    (root / "input" / "competitions" / "tiny").mkdir(parents=True)
    monkeypatch.setenv("KIT_KAGGLE_ROOT", str(root))
    with pytest.raises(KitError, match="the models dataset of tiny .* is not attached to this kernel: .*"
                                       "attached: competitions/tiny.*make publish competition=tiny"):
        find_release("tiny")
    shutil.copytree(folder, root / "input" / "datasets" / "tester" / "tiny-models")
    assert find_release("tiny") == root / "input" / "datasets" / "tester" / "tiny-models"
    shutil.copytree(folder, root / "input" / "tiny-models-old")  # another version attached too
    with pytest.raises(KitError, match=r"2 releases of tiny are attached \(.*tiny-models-old, .*tester/tiny-models\): "
                                       r"attach only the one to predict with"):
        find_release("tiny")
    shutil.rmtree(root / "input" / "datasets")
    (root / "input" / "tiny-models-old" / MANIFEST).write_text('{"competition": "ti')  # cut short
    with pytest.raises(KitError, match="tiny-models-old/kit-release.json is not readable JSON: a damaged release"):
        find_release("tiny")


def test_at_run_time_a_bad_test_image_or_another_sample_is_one_line_and_keeps_the_last_submission(
        fake_runs, tmp_path):
    from kit.kaggle.infer import infer

    spec, _, write = fake_runs
    write("vgg16", 0, 0.1)
    folder = build_release(spec, "mean", "tester")
    overrides = {"data_dir": str(spec.data_path), "runs_dir": str(spec.runs_path.parent)}
    for out in (tmp_path, f"{tmp_path / 'new'}/"):
        with pytest.raises(KitError, match="is a folder: give the submission's file, e.g. out=.*submission.csv"):
            infer(folder, out, overrides)
    out = tmp_path / "submission.csv"
    out.write_text("the last good one\n")
    sample = spec.data_path / "sample_submission.csv"
    pd.read_csv(sample).rename(columns={"b": "B"}).to_csv(sample, index=False)
    with pytest.raises(KitError, match="the sample submission's columns \\(id, a, B\\) are not the release's"):
        infer(folder, out, overrides)
    pd.read_csv(sample).rename(columns={"B": "b"}).to_csv(sample, index=False)
    (spec.data_path / "test" / "te003.png").write_bytes(b"\x89PNG cut")
    with pytest.raises(KitError, match="1 test images cannot be read .*te003.png"):
        infer(folder, out, overrides)
    with pytest.raises(KitError, match="is a release of tiny, not of other"):
        infer(folder, out, overrides, slug="other")
    pd.read_csv(sample).iloc[:0].to_csv(sample, index=False)
    with pytest.raises(KitError, match="sample_submission.csv: no test images .*: nothing to predict"):
        infer(folder, out, overrides)
    assert out.read_text() == "the last good one\n"


def test_make_infer_of_a_spec_given_as_a_path_reads_that_specs_data(fake_runs, tmp_path):
    """The release's own spec is portable (data/<slug>); the spec named on the command line says
    where the data is here. (The stand-in models get as far as their weights: the data was read.)"""
    from tests.helpers import ROOT

    spec, _, write = fake_runs
    write("vgg16", 0, 0.1)
    build_release(spec, "mean", "tester")
    (tmp_path / "elsewhere").mkdir()
    done = subprocess.run([sys.executable, "-m", "kit", "infer", f"competition={tmp_path / 'tiny.yaml'}"],
                          cwd=tmp_path / "elsewhere", env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no data folder" not in done.stderr
    assert done.stderr.startswith("error: ") and "holds other weights than vgg16 at 32px" in done.stderr, done.stderr
    assert _tensorflow_lines(done.stderr) == []  # TensorFlow's start-up lines stay off the screen


def test_the_inference_kernel_is_offline_and_carries_what_inference_imports(fake_runs):
    spec, _, write = fake_runs
    with pytest.raises(KitError, match="no release at .*release .*make release first"):
        build_inference_bundle(spec, "tester")
    write("vgg16", 0, 0.1)
    build_release(spec, "mean", "tester")
    folder = build_inference_bundle(spec, "alice")  # reads the dataset the release is published as
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["dataset_sources"] == ["tester/tiny-models"]
    assert meta["competition_sources"] == ["tiny"] and meta["id"] == "alice/tiny-inference"
    text = (folder / "kernel.py").read_text()
    assert "'kit/kaggle/infer.py'" in text and "'kit/train.py'" not in text and "'kit/bench/bench.py'" not in text


def _datasets(kaggle_server):
    """Stand-in replies for publishing: the dataset exists once `exists["now"]` is set."""
    exists = {"now": False}
    kaggle_server.replies.update({
        "GetDatasetStatus": lambda body: (200, {"status": "READY"}, {}) if exists["now"] else
        (404, {"code": 404, "message": "Dataset not found"}, {}),
        "StartBlobUpload": lambda body: (200, {"token": f"blob-{body['name']}",
                                               "createUrl": f"http://localhost/upload/{body['name']}"}, {}),
        "CreateDataset": (200, {"ref": "tester/tiny-models", "url": "https://www.kaggle.com/tester/tiny-models"}, {}),
        "CreateDatasetVersion": (200, {"ref": "tester/tiny-models", "url": "u"}, {}),
    })
    return exists


def test_publish_creates_the_dataset_then_a_version_only_when_the_release_changed(fake_runs, kaggle_server):
    from kit.kaggle.remote import publish

    spec, _, write = fake_runs
    for fold in (0, 1):
        write("vgg16", fold, 0.1, seed=fold)
    folder = build_release(spec, "mean", "tester")
    exists = _datasets(kaggle_server)
    publish(spec)
    sent = {name.removeprefix("/upload/"): data for name, data in kaggle_server.uploads.items()}
    assert sent == {n: b for n, b in _files(folder).items() if n != "dataset-metadata.json"}
    create = next(body for method, body, _ in kaggle_server.calls if method == "CreateDataset")
    assert (create["ownerSlug"], create["slug"], create["isPrivate"]) == ("tester", "tiny-models", True)
    assert sorted(f["token"] for f in create["files"]) == sorted(f"blob-{n}" for n in sent)
    exists["now"], calls = True, len(kaggle_server.calls)
    publish(spec)  # unchanged: nothing is sent
    assert len(kaggle_server.calls) == calls
    build_release(spec, "mean", "tester")  # rebuilt from the same runs: the same bytes
    publish(spec)
    assert len(kaggle_server.calls) == calls
    write("resnet50", 0, 0.5)
    build_release(spec, "mean", "tester")
    publish(spec)
    assert "CreateDatasetVersion" in kaggle_server.methods()[calls:]
    assert "CreateDataset" not in kaggle_server.methods()[calls:]


def test_submit_code_pushes_waits_for_complete_and_submits_that_version(fake_runs, kaggle_server, capsys):
    from kit.kaggle.remote import publish, submit_code
    from kit.runs import run_of

    spec, _, write = fake_runs
    write("vgg16", 0, 0.1)
    build_release(spec, "mean", "tester")
    _datasets(kaggle_server)
    with pytest.raises(KitError, match="release is not published as it is now: make publish first"):
        submit_code(spec, "tester", "m", poll=0)
    publish(spec)
    model = run_of(spec, "vgg16", 0).model
    original = model.read_bytes()
    model.write_bytes(b"retrained")
    with pytest.raises(KitError, match="retrained since make release: vgg16/fold0: make release and make publish"):
        submit_code(spec, "tester", "m", poll=0)
    model.write_bytes(original)
    kaggle_server.replies["SaveKernel"] = lambda body: (200, {"ref": "r", "url": "u", "versionNumber": 7}, {})
    states = iter(["QUEUED", "RUNNING", "RUNNING", "COMPLETE"])
    kaggle_server.replies["GetKernelSessionStatus"] = lambda body: (200, {"status": next(states)}, {})
    kaggle_server.replies["CreateCodeSubmission"] = (200, {"message": "Successfully submitted", "ref": 77}, {})
    submit_code(spec, "tester", "3 folds", poll=0)
    save = next(body for method, body, _ in kaggle_server.calls if method == "SaveKernel")
    assert save["slug"] == "tester/tiny-inference" and save["enableInternet"] is False
    submitted = next(body for method, body, _ in kaggle_server.calls if method == "CreateCodeSubmission")
    assert (submitted["kernelSlug"], submitted["kernelVersion"], submitted["fileName"]) == (
        "tiny-inference", 7, "submission.csv")
    assert submitted["competitionName"] == "tiny" and submitted["submissionDescription"] == "3 folds"
    assert "QUEUED" in capsys.readouterr().out
    assert kaggle_server.methods().count("GetKernelSessionStatus") == 4

    kaggle_server.replies["GetKernelSessionStatus"] = (200, {"status": "ERROR", "failureMessage": "boom"}, {})
    kaggle_server.replies["ListKernelSessionOutput"] = (200, {"files": [], "log": json.dumps(
        [{"stream_name": "stderr", "time": 1.0, "data": "error: 1 test images cannot be read\n"}])}, {})
    with pytest.raises(KitError) as e:
        submit_code(spec, "tester", "again", poll=0)
    assert "tester/tiny-inference ended in error: boom" in str(e.value)
    assert "  | error: 1 test images cannot be read" in str(e.value)


@pytest.mark.kaggle_image
def test_the_inference_kernel_on_a_hidden_test_set_writes_what_the_local_kit_would(tiny, tmp_path, monkeypatch,
                                                                                 kaggle_python):
    """Trained and released here; then run the way Kaggle re-runs a code competition: a fresh
    process, no network, the test folder and sample submission replaced by a hidden set (new ids,
    more rows, another order), the release attached as a dataset; by the Python of Kaggle's image
    (older keras, TensorFlow, pandas...: models trained with a newer keras predict there)."""
    python = kaggle_python
    from kit.kaggle.bundle import build_inference_bundle
    from kit.predict import predict_fold
    from kit.submission import ensemble_submission, problems
    from kit.train import run_fold

    monkeypatch.chdir(tmp_path)  # submissions/ of the local ensemble
    spec = tiny(backbones=["vgg16", "resnet50"], metric="log_loss", tta=["hflip"],
                schedule=[{"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-2, "patience": 0}])
    for backbone in spec.backbones:
        for fold in range(spec.n_folds):
            run_fold(spec, backbone, fold)
    release = build_release(spec, "mean", "tester")
    kernel = build_inference_bundle(spec, "tester")

    hidden = tmp_path / "hidden"  # the competition as Kaggle's re-run sees it
    shutil.copytree(spec.data_path, hidden, ignore=shutil.ignore_patterns("test", "sample_submission.csv"))
    (hidden / "test").mkdir()
    rng = np.random.default_rng(7)
    ids = [f"h{i:03d}" for i in rng.permutation(13)]
    for i, name in enumerate(ids):
        Image.fromarray(image(rng, "ab"[i % 2])).save(hidden / "test" / f"{name}.png")
    pd.DataFrame({"id": ids, "a": 0.5, "b": 0.5}).to_csv(hidden / "sample_submission.csv", index=False)
    root = tmp_path / "kaggle"
    shutil.copytree(hidden, root / "input" / "competitions" / "tiny")
    shutil.copytree(release, root / "input" / "datasets" / "tester" / "tiny-models")
    (root / "working").mkdir()
    script = shutil.copy(kernel / "kernel.py", tmp_path / "notebook.py")
    done = subprocess.run([python, script], cwd=root / "working", env=kernel_env(root, tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "13 test images; 4 models (vgg16, resnet50) x 2 test-time view(s)" in done.stdout
    ran = subprocess.run([python, "-c", "import keras, platform; print(platform.python_version(), keras.__version__)"],
                         capture_output=True, text=True, timeout=300).stdout.split()
    assert f"runs on python {ran[0]}, tensorflow " in done.stdout and f", keras {ran[1]}, " in done.stdout
    submission = root / "working" / "submission.csv"
    got = pd.read_csv(submission, dtype={"id": str})
    assert got["id"].tolist() == ids
    sample = pd.read_csv(hidden / "sample_submission.csv", dtype=str, keep_default_na=False)
    assert problems(submission, sample, spec, ["a", "b"]) == []

    shutil.rmtree(spec.data_path / "test")  # the local kit, on the same hidden images
    shutil.copytree(hidden / "test", spec.data_path / "test")
    shutil.copy(hidden / "sample_submission.csv", spec.data_path / "sample_submission.csv")
    for backbone in spec.backbones:
        for fold in range(spec.n_folds):
            predict_fold(spec, backbone, fold)
    monkeypatch.chdir(tmp_path)  # submissions/ is made where the command runs
    local = pd.read_csv(ensemble_submission(spec, "mean"), dtype={"id": str})
    assert local["id"].tolist() == ids
    np.testing.assert_allclose(got[["a", "b"]], local[["a", "b"]], atol=1e-6)


@pytest.mark.slow
def test_the_demos_inference_kernel_generates_the_demo_data_it_is_not_attached_to(tmp_path):
    """The README's code-competition walk-through on the demo: the demo is no Kaggle dataset, so
    its inference kernel makes the data as its training kernel does, then predicts it."""
    from kit.config import load_spec
    from kit.kaggle.bundle import build_inference_bundle
    from kit.train import run_fold

    spec = load_spec("demo", {"runs_dir": str(tmp_path / "runs"), "data_dir": str(tmp_path / "data"),
                              "backbones": "[vgg16]", "n_folds": "2", "limit_batches": "1",
                              "schedule": "[{name: head, trainable: none, epochs: 1, lr: 0.003}]"})
    for fold in range(2):
        run_fold(spec, "vgg16", fold)
    release = build_release(spec, "mean", "tester")
    kernel = build_inference_bundle(spec, "tester")
    assert json.loads((kernel / "kernel-metadata.json").read_text())["competition_sources"] == []
    root = tmp_path / "kaggle"
    shutil.copytree(release, root / "input" / "tiny-models")  # the release alone is attached
    (root / "working").mkdir()
    done = subprocess.run([sys.executable, kernel / "kernel.py"], cwd=root / "working",
                          env=kernel_env(root, tmp_path), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _tensorflow_lines(done.stderr) == []  # infer to its end, as a kernel runs it
    got = pd.read_csv(root / "working" / "submission.csv", dtype={"id": str})
    want = pd.read_csv(spec.data_path / "sample_submission.csv", dtype={"id": str})
    assert got["id"].tolist() == want["id"].tolist() and list(got.columns) == list(want.columns)


@pytest.mark.slow
def test_a_release_predicts_what_make_ensemble_submits_when_seeds_finished_other_folds(tiny, tmp_path, monkeypatch):
    """One path from the members' predictions to the submitted frame: averaged seeds, one of which
    finished fewer folds, give the same submission locally (make ensemble) and where the release
    runs (make infer, the inference kernel): each seed's folds averaged, then the seeds."""
    from kit.kaggle.infer import infer
    from kit.submission import ensemble_submission
    from kit.train import run_fold

    spec = tiny(backbones=["vgg16"], seeds=[0, 1], average_seeds=True, metric="log_loss",
                schedule=[{"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-2, "patience": 0}])
    runs = [("vgg16-seed0", 0), ("vgg16-seed0", 1), ("vgg16-seed1", 0)]
    for member, fold in runs:
        run_fold(spec, member, fold)
    monkeypatch.chdir(tmp_path)  # submissions/ of the local ensemble
    path = ensemble_submission(spec, "mean")
    local = pd.read_csv(path, dtype={"id": str})
    assert json.loads(path.with_suffix(".json").read_text())["runs"] == [f"{m}/fold{k}" for m, k in runs]
    release = build_release(spec, "mean", "tester")
    assert [(r["member"], r["fold"]) for r in load_release(release).recipe["members"][0]["runs"]] == runs
    out = infer(release, tmp_path / "released.csv", {"data_dir": str(spec.data_path),
                                                     "runs_dir": str(spec.runs_path.parent)})
    got = pd.read_csv(out, dtype={"id": str})
    np.testing.assert_allclose(got[["a", "b"]], local[["a", "b"]], atol=1e-6)
    tests = [pd.read_csv(run_of(spec, m, k).test)[["a", "b"]].to_numpy() for m, k in runs]
    assert not np.allclose(sum(tests) / 3, local[["a", "b"]], atol=1e-6)  # the runs' plain mean is another
