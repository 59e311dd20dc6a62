"""The command line as a user meets it: one clear line and a non-zero exit, never a traceback."""
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT, spec_file, write_competition


def kit(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["train", "backbone=xcepton"], "error: unknown backbone 'xcepton' (did you mean 'xception'?)"),
    (["train", "fold=7"], "error: fold 7 is out of range: n_folds is 3 (folds 0..2)"),
    (["train", "fold=one"], "error: fold: expected a whole number, got 'one'"),
    (["train", "epochs_hed=3"], "error: unknown key 'epochs_hed' (did you mean 'epochs_head'?)"),
    (["train", "competition=nope"], "error: unknown competition 'nope'"),
    (["train", "fold"], "error: expected key=value, got 'fold'"),
    (["trian"], "error: unknown command 'trian'"),
    (["folds", "runs_dir=/proc/kit-runs"], "error: cannot use /proc/kit-runs: No such file or directory"),
    (["train", "competition=dogs-vs-cats-redux-kernels-edition", "data_dir=/nonexistent/dvc"],
     "error: no data folder /nonexistent/dvc: "
     "run `make download competition=dogs-vs-cats-redux-kernels-edition`"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = kit(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == message or result.stderr.strip().startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("edit, message", [
    (lambda root: [(root / "train" / f"tr{i:03d}.png").unlink() for i in range(20)],
     "error: 20 of 24 train images are missing"),
    (lambda root: (root / "train.csv").write_text("id,label\n../../../etc/passwd,a\n"),
     "error: train id '../../../etc/passwd' points outside the data folder"),
])
def test_bad_data_on_the_command_line(tmp_path, edit, message):
    write_competition(tmp_path / "data")
    edit(tmp_path / "data")
    result = kit("train", f"competition={spec_file(tmp_path)}", "backbone=vgg16")
    assert result.returncode == 2 and result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not shutil.which("make"), reason="make is not installed")
def test_make_passes_command_line_variables_as_overrides(tmp_path):
    result = subprocess.run(["make", "--no-print-directory", "spec", "competition=demo", "epochs_head=3",
                             "lr_finetune=2e-5", f"PYTHON={sys.executable}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "epochs: 3" in result.stdout and "lr: 2.0e-05" in result.stdout


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_finished_epochs(tmp_path, monkeypatch, capsys):
    import errno

    from kit.checkpoint import Checkpoint
    from kit.cli import main

    write_competition(tmp_path / "data")
    real_write, written = Checkpoint._write_files, []

    def fill_up(self, *args):
        if written:  # the disk fills up after the first epoch is saved
            raise OSError(errno.ENOSPC, "No space left on device", str(self.folder / "epoch2.npy"))
        written.append(real_write(self, *args))
    monkeypatch.setattr(Checkpoint, "_write_files", fill_up)
    code = main(["train", f"competition={spec_file(tmp_path)}", "backbone=vgg16"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: no space left on the disk (") and "epoch2.npy" in err
    assert len(err.splitlines()) == 1
    run = next((tmp_path / "runs").glob("*/vgg16/fold0"))
    assert (run / "checkpoint" / "epoch1.npy").is_file() and len((run / "history.csv").read_text().splitlines()) == 2


def test_a_spec_is_checked_before_any_work_and_what_would_waste_a_run_is_said(tmp_path):
    write_competition(tmp_path / "data", n_train=10)
    wrong = kit("train", f"competition={spec_file(tmp_path, train_csv='labels.csv')}")
    assert wrong.returncode == 2 and "labels.csv" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    assert "Epoch" not in wrong.stdout and "TensorFlow" not in wrong.stderr  # no training, no TensorFlow
    said = kit("spec", f"competition={spec_file(tmp_path, n_folds=6, batch_size=9)}")
    assert said.returncode == 0 and said.stdout.startswith("slug: tiny")
    assert said.stderr.splitlines() == [
        "warning: batch_size 9 is at or above the 9 training images of a fold: one step an epoch",
        "warning: class 'a' has 5 images, fewer than the 6 folds: 1 of them validate on none of it, so their "
        "scores say nothing about it",
        "warning: class 'b' has 5 images, fewer than the 6 folds: 1 of them validate on none of it, so their "
        "scores say nothing about it",
        f"checked {tmp_path / 'data'}: 10 training images (2 classes: 'a', 'b'), 8 test images"]


def test_validating_a_tfrecord_competitions_csv_prints_no_tensorflow_start_up_lines(tmp_path):
    from tests import layouts
    from tests.test_layouts import SPECS

    layouts.flowers_tfrecords(tmp_path / "data")
    spec = spec_file(tmp_path, **SPECS["flowers_tfrecords"])
    sample = tmp_path / "data" / "sample_submission.csv"
    shutil.copy(sample, tmp_path / "mine.csv")
    done = kit("validate", f"competition={spec}", f"file={tmp_path / 'mine.csv'}")
    assert done.returncode == 0 and "valid" in done.stdout, done.stderr
    assert done.stderr == ""


def test_validate_without_competition_uses_the_spec_the_file_names_and_never_the_demos_by_default(tmp_path):
    """A submission the kit wrote names its competition (its .json, its name): that spec's own
    sample_submission is the one checked. A file that names none is one line asking for
    competition=, not the demo's sample (whose columns are not this competition's)."""
    import json

    import yaml

    from tests.helpers import TINY

    data = write_competition(tmp_path / "data" / "odd")
    (data / "sample_submission.csv").rename(data / "sampleSubmission.csv")
    (tmp_path / "competitions").mkdir()
    (tmp_path / "competitions" / "odd.yaml").write_text(yaml.safe_dump({**TINY, "sample_submission": "sampleSubmission.csv"}))
    (tmp_path / "data" / "demo").mkdir()  # the demo was run here once
    (tmp_path / "data" / "demo" / "sample_submission.csv").write_text("id,label\n0,x\n")
    (tmp_path / "submissions").mkdir()
    made = tmp_path / "submissions" / "odd-20260101T000000Z-mean.csv"
    shutil.copy(data / "sampleSubmission.csv", made)
    shutil.copy(made, tmp_path / "submission.csv")  # a kernel's, with the .json beside it
    (tmp_path / "submission.json").write_text(json.dumps({"competition": "odd"}))
    for file in (made, tmp_path / "submission.csv"):
        done = kit("validate", f"file={file}", cwd=tmp_path)
        assert done.returncode == 0 and "valid (8 rows, columns id, a, b)" in done.stdout, done.stderr
    shutil.copy(made, tmp_path / "mine.csv")
    done = kit("validate", "file=mine.csv", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: mine.csv names no competition (no mine.json beside it, and its name is not "
        "<competition>-<time>-<method>.csv): give competition=<slug>"), done.stderr
