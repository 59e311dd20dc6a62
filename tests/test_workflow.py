"""The whole workflow through the command line: all -> cv -> ensemble -> validate -> submit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import ROOT, spec_file, write_competition


def kit(*args, cwd, env=None):
    env = {**(env or os.environ), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _submitted(out):
    """The submission `kit all` wrote, as its output says."""
    return Path(next(line for line in out.splitlines() if line.startswith("wrote submissions/")).split()[1])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny competition after `kit all`: 2 backbones x 2 folds, 1 epoch each."""
    root = tmp_path_factory.mktemp("workflow")
    write_competition(root / "data", classes=("a", "b", "c"), n_train=30)
    spec = spec_file(root, backbones=["vgg16", "resnet50"], metric="log_loss",
                     schedule=[{"name": "head", "trainable": "none", "epochs": 1, "lr": 0.01, "patience": 0}])
    result = kit("all", f"competition={spec}", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, spec, result.stdout


@pytest.mark.slow
def test_all_trains_every_run_then_reports_cv_and_writes_a_valid_submission(finished):
    root, spec, out = finished
    runs = root / "runs" / "tiny"
    assert sorted(p.parent.name + "/" + p.name for p in runs.glob("*/fold*")) == [
        "resnet50/fold0", "resnet50/fold1", "vgg16/fold0", "vgg16/fold1"]
    cv = pd.read_csv(runs / "cv.csv")
    ensembles = {f"ensemble:{m}{pp}" for m in ("mean", "weighted", "stack") for pp in ("", "+pp")}
    assert set(cv["model"]) == {"vgg16", "resnet50", *ensembles}
    assert "log_loss (lower is better)" in out and "the best honest CV" in out
    best = cv[cv["model"].str.startswith("ensemble")].sort_values("score").iloc[0]
    assert f"chose {best['model'].removeprefix('ensemble:')}: the best honest CV ({best['score']:.5f}" in out
    report = (runs / "report.md").read_text()
    for figure in ("report/vgg16-curves.png", "report/resnet50-curves.png", "report/oof-confusion.png"):
        assert figure in report and (runs / figure).read_bytes()[:4] == b"\x89PNG"
    csv = root / _submitted(out)
    sample = pd.read_csv(root / "data" / "sample_submission.csv")
    submission = pd.read_csv(csv)
    assert list(submission.columns) == list(sample.columns) and submission["id"].tolist() == sample["id"].tolist()
    result = kit("validate", f"competition={spec}", f"file={csv}", cwd=root)
    assert result.returncode == 0 and "valid (8 rows, columns id, a, b, c)" in result.stdout


@pytest.mark.slow
def test_weighted_ensemble_reports_its_weights_and_cv_reads_runs_as_they_are(finished):
    root, spec, _ = finished
    result = kit("ensemble", f"competition={spec}", "method=weighted", "postprocess=off", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "weights: vgg16" in result.stdout and "-weighted.csv" in result.stdout
    made = json.loads(next((root / "submissions").glob("tiny-*-weighted.json")).read_text())
    assert sum(made["ensemble"]["weights"]) == pytest.approx(1) and len(made["runs"]) == 4
    assert made["postprocess"] is None and made["cv"] == made["cv_without_postprocess"]
    result = kit("cv", f"competition={spec}", "backbones=vgg16,xception", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "not finished: xception/fold0, xception/fold1" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["ensemble", "method=median"], "error: unknown ensemble method 'median' (methods: auto, mean, rank, weighted, stack)"),
    (["ensemble", "method=rank"], "error: rank averaging gives ranks, not probabilities"),
    (["ensemble", "backbones=xception"], "error: no finished runs of xception under"),
    (["validate", "file=nowhere.csv"], "error: no submission file at nowhere.csv"),
])
@pytest.mark.slow
def test_ensemble_and_validate_refuse_clearly(finished, args, message):
    root, spec, _ = finished
    result = kit(*args, f"competition={spec}", cwd=root)
    assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_validate_lists_every_problem_and_nothing_is_overwritten(finished):
    root, spec, _ = finished
    bad = root / "bad.csv"
    bad.write_text("id,a,b\nte000,0.5,nan\n")
    result = kit("validate", f"competition={spec}", f"file={bad}", cwd=root)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines[0].endswith("bad.csv is not a valid submission (4 problems):")
    assert lines[1:] == ["  - column 'c' is missing", "  - 1 rows; the sample submission has 8",
                         "  - 7 ids of the sample are missing, e.g. 'te001'",
                         "  - column 'b': 1 values are not numbers (empty, NaN or text), e.g. row 2"]
    assert bad.read_text() == "id,a,b\nte000,0.5,nan\n"
    result = kit("submit", f"competition={spec}", f"file={bad}", "dry_run=1", cwd=root)
    assert result.returncode == 2 and "not a valid submission" in result.stderr


@pytest.mark.slow
def test_submit_dry_run_shows_what_would_be_sent(finished):
    root, spec, _ = finished
    result = kit("submit", f"competition={spec}", "dry_run=1", "message=first try", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "dry run: would submit submissions/tiny-" in result.stdout and "'first try'" in result.stdout


@pytest.mark.slow
def test_submit_through_the_real_client(finished, kaggle_server):
    root, spec, _ = finished
    csv = root / _submitted(finished[2])
    result = kit("submit", f"competition={spec}", f"file={csv}", cwd=root, env=os.environ)
    assert result.returncode == 0, result.stderr
    assert "Successfully submitted to the competition (submission 4242)" in result.stdout
    assert kaggle_server.uploads["/upload/1"] == csv.read_bytes()
    create = next(body for method, body, _ in kaggle_server.calls if method == "CreateSubmission")
    assert create["competitionName"] == "tiny" and create["submissionDescription"].startswith(f"{csv.stem.split('-')[-1]} of 4 runs, CV log_loss")
    kaggle_server.replies["CreateSubmission"] = (400, {"code": 400, "message": "Submission not allowed: not joined"}, {})
    result = kit("submit", f"competition={spec}", f"file={csv}", cwd=root, env=os.environ)
    assert result.returncode == 2 and result.stderr.strip() == \
        "error: Kaggle refused the submission: Submission not allowed: not joined"
    assert csv.is_file()


def test_download_without_credentials_says_how_to_set_them_up(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(HOME=str(tmp_path), KAGGLE_CONFIG_DIR=str(tmp_path / ".kaggle"))
    result = kit("download", "competition=dogs-vs-cats-redux-kernels-edition", f"data_dir={tmp_path / 'd'}",
                 cwd=tmp_path, env=env)
    assert result.returncode == 2 and result.stderr.startswith("error: no Kaggle credentials: create a token")
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert kit("download", "competition=demo", cwd=tmp_path, env=env).stdout.startswith(
        "demo is generated by the kit on first use")


@pytest.mark.slow
def test_validate_without_competition_reads_it_off_the_submission(finished):
    import shutil

    root, spec, out = finished
    (root / "competitions").mkdir(exist_ok=True)
    shutil.copy(spec, root / "competitions" / "tiny.yaml")  # where a competition's name is looked up
    result = kit("validate", f"file={_submitted(out)}", cwd=root)
    assert result.returncode == 0 and "valid (8 rows, columns id, a, b, c)" in result.stdout, result.stderr


@pytest.mark.slow
def test_two_make_all_at_once_train_each_fold_once_and_both_submit_every_run(tmp_path):
    """Two `make all` racing on one competition: each fold is trained by one of them, and the one
    done with its folds first waits for the other's, so that both ensemble every run. Three folds:
    whichever process takes the last, the other finishes its own while that one is training."""
    write_competition(tmp_path / "data", n_train=18)
    spec = spec_file(tmp_path, metric="log_loss", batch_size=4, n_folds=3,
                     schedule=[{"name": "head", "trainable": "none", "epochs": 1, "lr": 0.01, "patience": 0}])
    racing = [subprocess.Popen([sys.executable, "-m", "kit", "all", f"competition={spec}"], cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in racing]
    for p, (_, err) in zip(racing, outs):
        assert p.returncode == 0, err[-3000:]
    both = "".join(out for out, _ in outs)
    assert [both.count(f"fold {k} log_loss:") for k in range(3)] == [1, 1, 1]  # each trained once
    for out, _ in outs:
        made = json.loads((tmp_path / _submitted(out)).with_suffix(".json").read_text())
        assert made["runs"] == ["vgg16/fold0", "vgg16/fold1", "vgg16/fold2"] and made["missing"] == []
    assert "waiting for vgg16/fold" in both and "partial" not in both
