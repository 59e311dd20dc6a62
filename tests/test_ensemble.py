"""Ensembling and CV over fold x backbone runs written to disk (no training needed)."""
import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from kit import KitError
from kit.config import load_spec
from kit.ensemble import combine, cross_validate, hill_climb, labels_of, load_members
from kit.metrics import spec_score
from kit.options import submission_file
from kit.runs import run_of
from kit.submission import ensemble_submission
from tests.helpers import spec_file


def test_folds_of_a_backbone_combine_first_and_missing_runs_are_named(fake_runs):
    spec, data, write = fake_runs
    t0, t1 = write("vgg16", 0, 0.2), write("vgg16", 1, 0.2, seed=1)
    write("resnet50", 1, 0.5)
    members, missing = load_members(spec, data)
    assert [m.name for m in members] == ["vgg16", "resnet50"]
    assert missing == ["resnet50/fold0", "xception/fold0", "xception/fold1"]
    vgg = members[0]
    assert sorted(vgg.oof.index) == sorted(data.train["id"]) and vgg.folds == [0, 1]
    np.testing.assert_allclose(vgg.test["a"], (t0 + t1) / 2)


def test_mean_rank_and_weighted_ensembles(fake_runs):
    spec, data, write = fake_runs
    for fold in (0, 1):
        write("vgg16", fold, 0.1, seed=fold)
        write("resnet50", fold, 0.9, seed=10 + fold)
    members, _ = load_members(spec, data)
    y_of = labels_of(data)
    mean = combine(spec, members, y_of, "mean")
    assert mean.params["weights"] == [0.5, 0.5]
    np.testing.assert_allclose(mean.oof, (members[0].oof.loc[mean.ids] + members[1].oof.loc[mean.ids]) / 2)
    weighted = combine(spec, members, y_of, "weighted")
    w = np.array(weighted.params["weights"])  # fitted on every fold: for the test predictions
    assert w[0] > w[1] and w.sum() == pytest.approx(1)
    assert spec_score(spec, weighted.y, weighted.oof) <= spec_score(spec, mean.y, mean.oof)
    with pytest.raises(KitError, match="rank averaging gives ranks, not probabilities: it fits roc_auc"):
        combine(spec, members, y_of, "rank")
    auc = load_spec(str(spec_file(spec.runs_path.parent.parent, metric="roc_auc",
                                  backbones=["vgg16", "resnet50", "xception"])))
    rank = combine(auc, members, y_of, "rank")
    assert 0 < rank.oof.min() and rank.oof.max() <= 1 and 0 < rank.test.min()
    with pytest.raises(KitError, match="unknown ensemble method 'median' \\(methods: auto, mean, rank, weighted, stack\\)"):
        combine(spec, members, y_of, "median")


def test_hill_climbing_keeps_the_best_member_alone_when_others_only_hurt():
    y = np.array([0, 1, 0, 1, 1, 0])
    good, bad = y * 0.8 + 0.1, 1 - (y * 0.8 + 0.1)
    weights = hill_climb([bad, good], y, lambda y, p: -np.mean((y - p) ** 2), True)
    assert weights.tolist() == [0.0, 1.0]


def test_cv_table_has_every_fold_every_backbone_and_the_ensembles(fake_runs):
    spec, data, write = fake_runs
    for fold in (0, 1):
        write("vgg16", fold, 0.1, seed=fold)
        write("resnet50", fold, 0.6, seed=5 + fold)
    table, members, missing, choices = cross_validate(spec, data)
    assert table[["model", "fold"]].values.tolist() == [
        ["vgg16", "fold0"], ["vgg16", "fold1"], ["vgg16", "oof"], ["resnet50", "fold0"], ["resnet50", "fold1"],
        ["resnet50", "oof"], ["ensemble:mean", "oof"], ["ensemble:mean+pp", "oof"], ["ensemble:weighted", "oof"],
        ["ensemble:weighted+pp", "oof"], ["ensemble:stack", "oof"], ["ensemble:stack+pp", "oof"]]
    scores = dict(zip(table["model"] + "/" + table["fold"], table["score"]))
    assert scores["vgg16/oof"] < scores["resnet50/oof"]  # log loss: lower is better
    assert table["images"].tolist()[:3] == [12, 12, 24]
    assert [c.ensemble.method for c in choices] == ["mean", "weighted", "stack"]


def test_no_runs_and_stale_runs_are_clear_errors(fake_runs):
    spec, data, write = fake_runs
    with pytest.raises(KitError, match="no finished runs of vgg16, resnet50, xception under .*make fold=0"):
        load_members(spec, data)
    write("efficientnetb0", 1, 0.1)  # trained with backbone=..., not a member of the spec
    with pytest.raises(KitError, match="finished runs of efficientnetb0 are there: backbones=efficientnetb0 names them"):
        load_members(spec, data)
    write("vgg16", 0, 0.1)
    run = run_of(spec, "vgg16", 0)
    test = pd.read_csv(run.test)
    test.iloc[::-1].to_csv(run.test, index=False)  # the same images in another order: read in the data's
    members, _ = load_members(spec, data)
    assert members[0].test.index.tolist() == data.test["id"].tolist()
    test.iloc[:-1].to_csv(run.test, index=False)  # a test set changed since: predicted again, not retrained
    with pytest.raises(KitError, match="vgg16/fold0 predicted other test images .*make predict fold=0 backbone=vgg16"):
        load_members(spec, data)
    test.to_csv(run.test, index=False)
    oof = pd.read_csv(run.oof)
    oof.assign(id=oof["id"] + "x").to_csv(run.oof, index=False)
    with pytest.raises(KitError, match="was trained on other data .* force=1"):
        load_members(spec, data)
    oof.assign(a="0.3x").to_csv(run.oof, index=False)
    with pytest.raises(KitError, match="oof.csv: damaged OOF predictions .*make predict"):
        load_members(spec, data)


def test_runs_of_other_images_folds_or_classes_are_refused_and_mixed_settings_said(fake_runs, capsys):
    """cv, ensemble and release read the runs `make all` would keep: a stale one is one line."""
    spec, data, write = fake_runs
    write("vgg16", 0, 0.1)
    write("vgg16", 1, 0.1, seed=1)
    run = run_of(spec, "vgg16", 0)
    config = run.config.read_text()
    for edit, what in [("train_ids_sha1: 0bad\n", "training images"), ("folds_sha1: 0bad\n", "folds"),
                       ("labels_sha1: 0bad\n", "labels")]:
        run.config.write_text(config + edit)
        with pytest.raises(KitError, match=f"vgg16/fold0 was trained on other {what} than {spec.data_path} gives now"):
            load_members(spec, data)
    run.config.write_text(config)
    oof = pd.read_csv(run.oof)
    oof.rename(columns={"b": "c"}).to_csv(run.oof, index=False)  # a class the labels no longer have
    with pytest.raises(KitError, match="vgg16/fold0 was trained on other classes"):
        load_members(spec, data)
    oof.to_csv(run.oof, index=False)
    load_members(spec, data)
    assert "mixes" not in capsys.readouterr().out
    run.config.write_text(config + "lr: 0.1\nworkers: 8\n")  # workers: how fast, not what it learns
    other = run_of(spec, "vgg16", 1).config
    other.write_text(other.read_text() + "lr: 0.01\nworkers: 2\nblocks: [block5_]\n")  # blocks: fold0 predates it
    load_members(spec, data)
    assert capsys.readouterr().out == "vgg16: fold1 was trained or predicted with other settings (lr) than fold0: its CV mixes them\n"
    run.config.write_text(config + "tta: [hflip]\n")
    other.write_text(other.read_text().replace("lr: 0.01", "tta: []"))  # predicted again with other views
    load_members(spec, data)
    assert capsys.readouterr().out == "vgg16: fold1 was trained or predicted with other settings (tta) than fold0: its CV mixes them\n"


def test_a_submission_of_unfinished_runs_is_named_partial_and_says_which_are_missing(fake_runs, monkeypatch,
                                                                                     capsys):
    """A fold missing or still training (make ensemble during make all) gives a submission that
    validates: its name, its .json and the last line say it is not the final one."""
    spec, _, write = fake_runs
    folder = spec.runs_path.parent.parent
    monkeypatch.chdir(folder)  # submissions/ is made where the command runs
    write("vgg16", 0, 0.1)
    write("vgg16", 1, 0.1, seed=1)
    write("resnet50", 0, 0.3)
    path = ensemble_submission(spec, "mean")
    about = json.loads(path.with_suffix(".json").read_text())
    assert path.name.endswith("-mean-partial.csv") and about["method"] == "mean" and about["partial"]
    assert about["missing"] == ["resnet50/fold1", "xception/fold0", "xception/fold1"]
    assert capsys.readouterr().out.splitlines()[-1] == (
        "partial: 3 of 6 runs are not finished (resnet50/fold1, xception/fold0, xception/fold1): not the final "
        "submission; make ensemble again once they are")
    with pytest.raises(KitError, match="is of unfinished runs .*give file= to submit it anyway"):
        submission_file(spec, "")  # make submit's default: never a partial one unless named
    complete = load_spec(str(spec_file(folder, metric="log_loss", backbones=["vgg16"], postprocess="off")))
    path = ensemble_submission(complete, "mean")
    about = json.loads(path.with_suffix(".json").read_text())
    assert path.name.endswith("-mean.csv") and not about["partial"] and about["missing"] == []
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {path}"
    assert submission_file(complete, "").resolve() == path.resolve()


def test_an_ensemble_reads_ids_labels_and_predictions_not_the_images(fake_runs, monkeypatch):
    """At 200k ids, finding every image on disk was most of make ensemble's time: it needs none
    of them, so it works with the images gone after prediction."""
    spec, data, write = fake_runs
    for fold in (0, 1):
        write("vgg16", fold, 0.1, seed=fold)
    shutil.rmtree(spec.data_path / "test")
    (spec.data_path / "train" / f"{data.train['id'][0]}.png").unlink()
    monkeypatch.chdir(spec.runs_path.parent.parent)
    path = ensemble_submission(load_spec(str(spec_file(spec.runs_path.parent.parent, metric="log_loss"))),
                               "mean")
    assert pd.read_csv(path, dtype=str)["id"].tolist() == data.test["id"].tolist()


def test_validate_checks_a_submission_against_the_spec_that_made_it(fake_runs, monkeypatch, capsys):
    """A spec given as a path (in no competitions/ folder), its sample file named otherwise:
    `make validate file=...` with no competition= checks against that spec's own sample."""
    from kit.cli import main
    spec, _, write = fake_runs
    monkeypatch.chdir(spec.runs_path.parent.parent)
    (spec.data_path / "sample_submission.csv").rename(spec.data_path / "sampleSubmission.csv")
    spec = dataclasses.replace(spec, sample_submission="sampleSubmission.csv", backbones=["vgg16"])
    for fold in (0, 1):
        write("vgg16", fold, 0.1, seed=fold)
    path = ensemble_submission(spec, "mean")
    capsys.readouterr()
    assert main(["validate", f"file={path}"]) == 0, capsys.readouterr().err
    assert "valid (8 rows" in capsys.readouterr().out
    path.with_suffix(".json").write_text("{broken")
    assert main(["validate", f"file={path}"]) == 2
    assert capsys.readouterr().err.strip().endswith("not the JSON the kit wrote beside "
                                                    f"{path.name}: give competition=<slug>")
