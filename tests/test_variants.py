"""Members beyond backbones: seeds and image sizes of one backbone, and a pseudo-labelling round."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from kit import KitError
from kit.config import load_spec
from kit.data import load_data
from kit.ensemble import cross_validate, load_members
from kit.members import member_spec
from kit.runs import variant, variants

HEAD = [{"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-2, "patience": 0}]


def test_member_names_stand_for_a_backbone_and_its_variant(tiny):
    spec = tiny(backbones=["vgg16", "resnet50"], seeds=[0, 1], image_sizes=[32, 40])
    assert [v.name for v in variants(spec)][:4] == ["vgg16-seed0-32px", "vgg16-seed0-40px", "vgg16-seed1-32px",
                                                    "vgg16-seed1-40px"]
    assert len(variants(spec)) == 8 and variant("vgg16-seed1-40px") == variants(spec)[3]
    backbone, trained = member_spec(spec, "vgg16-seed1-40px")
    assert (backbone, trained.seed, trained.image_size, trained.folds_seed) == ("vgg16", 1, 40, spec.seed)
    assert member_spec(tiny(), "vgg16")[1].seed == 0  # a plain backbone keeps the spec's settings
    with pytest.raises(KitError, match="'vgg16_seed1' is not|unknown backbone 'vgg16_seed1'"):
        member_spec(spec, "vgg16_seed1")
    with pytest.raises(KitError, match="vgg16-pseudo: a -pseudo member trains on pseudo-labels: make pseudo"):
        member_spec(spec, "vgg16-pseudo")
    with pytest.raises(KitError, match="xception-40px: 40px is below xception's minimum of 71px"):
        member_spec(spec, "xception-40px")


@pytest.mark.slow
def test_seed_members_then_a_pseudo_round_whose_labels_never_reach_validation(tiny, capsys, tmp_path, monkeypatch):
    from kit.folds import load_fold
    from kit.pseudo import pseudo_round
    from kit.train import run_fold

    spec = tiny(backbones=["vgg16"], seeds=[0, 1], metric="log_loss", schedule=HEAD)
    for member in ("vgg16-seed0", "vgg16-seed1"):
        for fold in (0, 1):
            run_fold(spec, member, fold)
    folds = (spec.runs_path / "folds.csv").read_bytes()
    runs = {m: pd.read_csv(spec.runs_path / m / "fold0" / "test.csv") for m in ("vgg16-seed0", "vgg16-seed1")}
    assert not np.allclose(runs["vgg16-seed0"][["a", "b"]], runs["vgg16-seed1"][["a", "b"]])  # another seed
    config = yaml.safe_load((spec.runs_path / "vgg16-seed1" / "fold0" / "config.yaml").read_text())
    assert (config["member"], config["backbone"], config["seed"]) == ("vgg16-seed1", "vgg16", 1)
    data = load_data(spec)
    members, _ = load_members(spec, data)
    assert [m.name for m in members] == ["vgg16-seed0", "vgg16-seed1"]
    averaged, _ = load_members(tiny(backbones=["vgg16"], seeds=[0, 1], average_seeds=True), data)
    assert [m.name for m in averaged] == ["vgg16-seeds"] and averaged[0].parts == ["vgg16-seed0", "vgg16-seed1"]
    np.testing.assert_allclose(averaged[0].test, (members[0].test + members[1].test) / 2)
    from kit.submission import ensemble_submission
    monkeypatch.chdir(tmp_path)  # submissions/ is made where the command runs
    made = json.loads(ensemble_submission(tiny(backbones=["vgg16"], seeds=[0, 1], average_seeds=True,
                                               metric="log_loss"), "mean").with_suffix(".json").read_text())
    assert made["runs"] == ["vgg16-seed0/fold0", "vgg16-seed0/fold1", "vgg16-seed1/fold0", "vgg16-seed1/fold1"]

    round2 = load_spec(str(pseudo_round(tiny(backbones=["vgg16"], seeds=[0, 1], metric="log_loss", schedule=HEAD,
                                             pseudo_threshold=0.5))))
    labels = pd.read_csv(round2.pseudo, dtype={"id": str})
    assert set(labels["fold"]) == {0, 1} and set(labels["id"]) <= set(data.test["id"])
    assert [v.name for v in variants(round2)] == ["vgg16-seed0", "vgg16-seed1", "vgg16-seed0-pseudo",
                                                  "vgg16-seed1-pseudo"]
    _, trained = member_spec(round2, "vgg16-seed0-pseudo")
    f = load_fold(trained, "vgg16", 0)
    n = len(f.data.train)
    assert (f.val_idx < n).all() and (f.train_idx >= n).sum() == (labels["fold"] == 0).sum()
    out = run_fold(round2, "vgg16-seed0-pseudo", 0)
    assert "test images join fold 0's training images" in (out / "log.txt").read_text()
    oof = pd.read_csv(out / "oof.csv", dtype={"id": str})
    assert not set(oof["id"]) & set(data.test["id"])  # no pseudo-labelled image is ever validated on
    assert (spec.runs_path / "folds.csv").read_bytes() == folds  # the same folds for every member
    table, *_ = cross_validate(round2, data)
    assert {"vgg16-seed0", "vgg16-seed0-pseudo"} <= set(table["model"])  # both rounds side by side


def test_a_pseudo_round_before_any_run_says_what_it_needs(tiny):
    from kit.pseudo import pseudo_round

    with pytest.raises(KitError, match="a pseudo round needs round 1's test predictions: no finished runs of vgg16"):
        pseudo_round(tiny())


def test_a_pseudo_round_with_no_confident_image_or_another_test_set_is_no_traceback(fake_runs, tmp_path):
    import dataclasses

    from kit.pseudo import _labels, pseudo_round
    from kit.runs import run_of

    spec, data, write = fake_runs
    for task, p in (("binary", np.zeros(0)), ("multilabel", np.zeros((0, 3)))):  # no row is sure
        assert _labels(dataclasses.replace(spec, task=task), p).shape == (0, 1 if task == "binary" else 3)
    write("vgg16", 0, 0.1)
    pseudo_round(dataclasses.replace(spec, pseudo_threshold=1.0))
    assert len(pd.read_csv(spec.runs_path / "pseudo.csv")) == 0
    test = run_of(spec, "vgg16", 0).test
    pd.read_csv(test).iloc[1:].to_csv(test, index=False)
    with pytest.raises(KitError, match="vgg16/fold0 predicted other test images .*make predict fold=0"):
        pseudo_round(spec)
