"""Code competitions: the ensemble released as a flat folder, published as a Kaggle dataset, run
offline by an inference kernel on a hidden test set, and submitted as a kernel version."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit import KitError
from kit.bundle import build_inference_bundle
from kit.ensemble import combine, labels_of, load_members
from kit.release import MANIFEST, build_release, find_release, load_release
from kit.runs import run_of
from tests.helpers import image, kernel_env

KEY = "0123456789abcdef0123456789abcdef"  # the stand-in server's dummy token key


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
    assert sorted(files) == ["dataset-metadata.json", MANIFEST, "recipe.json", "resnet50-fold0.keras",
                             "resnet50-fold1.keras", "spec.yaml", "vgg16-fold0.keras", "vgg16-fold1.keras"]
    assert files["vgg16-fold1.keras"] == run_of(spec, "vgg16", 1).model.read_bytes()  # the run's model, as it is
    recipe = json.loads(files["recipe.json"])
    assert [(m["name"], m["weight"]) for m in recipe["members"]] == [("vgg16", 0.5), ("resnet50", 0.5)]
    assert recipe["members"][0]["runs"] == [
        {"member": "vgg16", "fold": 0, "file": "vgg16-fold0.keras", "image_size": 32},
        {"member": "vgg16", "fold": 1, "file": "vgg16-fold1.keras", "image_size": 32}]
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
    assert "resnet50 (weight 0)" in weighted["missing"] and not (folder / "resnet50-fold0.keras").exists()
    only = build_release(spec, "mean", "tester", members="vgg16")
    assert sorted(p.name for p in only.glob("*.keras")) == ["vgg16-fold0.keras", "vgg16-fold1.keras"]


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
    model = folder / "vgg16-fold0.keras"
    model.write_bytes(model.read_bytes() + b"!")
    with pytest.raises(KitError, match="vgg16-fold0.keras does not match its checksum in kit-release.json"):
        load_release(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]["vgg16-fold0.keras"]  # then a damaged model would go unchecked
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(KitError, match="kit-release.json does not list vgg16-fold0.keras"):
        load_release(folder)
    (folder / MANIFEST).write_text("{bad")
    with pytest.raises(KitError, match="kit-release.json is not readable JSON: a damaged release"):
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


def test_at_run_time_a_bad_test_image_or_another_sample_is_one_line_and_keeps_the_last_submission(
        fake_runs, tmp_path):
    from kit.infer import infer

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
    assert "'kit/infer.py'" in text and "'kit/train.py'" not in text and "'kit/bench.py'" not in text


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
    from kit.remote import publish

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
    from kit.remote import publish, submit_code
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


@pytest.mark.slow
def test_the_inference_kernel_on_a_hidden_test_set_writes_what_the_local_kit_would(tiny, tmp_path, monkeypatch):
    """Trained and released here; then run the way Kaggle re-runs a code competition: a fresh
    process, no network, the test folder and sample submission replaced by a hidden set (new ids,
    more rows, another order), the release attached as a dataset."""
    from kit.bundle import build_inference_bundle
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
    done = subprocess.run([sys.executable, script], cwd=root / "working", env=kernel_env(root, tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "13 test images; 4 models (vgg16, resnet50) x 2 test-time view(s)" in done.stdout
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
