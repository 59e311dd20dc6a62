"""make init: a spec written from the data folder alone reads the data as a hand-written spec does,
and takes a competition from its download to a valid submission."""
import numpy as np
import pandas as pd
import pytest

from kit import KitError
from kit.cli import main
from kit.config import load_spec
from kit.data import load_data
from kit.init import init
from kit.submission import check
from kit.survey import GUESSERS
from tests import layouts
from tests.helpers import spec_file, write_competition
from tests.test_layouts import SPECS

READ = list(SPECS)  # every example competition of tests/layouts.py
GIVEN = {"bengali_parquet": {"image_shape": "[10, 14]"}}  # 140 values a row: 10 x 14 or 14 x 10?


def _init(tmp_path, name, **given):
    getattr(layouts, name)(tmp_path / "data")
    metric = SPECS[name].get("metric", "accuracy")
    given = {"data_dir": str(tmp_path / "data"), "metric": metric, **GIVEN.get(name, {}), **given}
    return init(name, given, folder=tmp_path)


def test_every_layout_has_a_guesser():
    from kit.layouts import LAYOUTS

    assert set(GUESSERS) == set(LAYOUTS)


@pytest.mark.parametrize("name", READ)
def test_the_written_spec_reads_the_data_as_the_hand_written_one(tmp_path, name):
    path = _init(tmp_path, name)
    (tmp_path / "hand").mkdir()
    hand = load_spec(str(spec_file(tmp_path / "hand", data_dir=str(tmp_path / "data"), **SPECS[name])))
    made, want = load_data(load_spec(str(path))), load_data(hand)
    assert made.classes == want.classes
    assert made.train["id"].tolist() == want.train["id"].tolist() and made.train["path"].tolist() == \
        want.train["path"].tolist()
    np.testing.assert_array_equal(made.y, want.y)
    assert made.test["id"].tolist() == want.test["id"].tolist()
    assert load_spec(str(path)).task == hand.task
    text = path.read_text()
    said = [line for line in text.splitlines() if line.startswith(("layout:", "id_column:", "image_form:"))]
    assert said and all("  # " in line for line in said[:1]), text  # what it saw, beside the key


def test_a_labels_csv_with_its_columns_and_a_patient_id(tmp_path):
    root = write_competition(tmp_path / "data", classes=("benign", "malignant"))
    labels = pd.read_csv(root / "train.csv")
    labels.insert(1, "patient_id", [f"p{i // 3}" for i in range(len(labels))])
    labels.rename(columns={"label": "diagnosis", "id": "image_name"}).to_csv(root / "train.csv", index=False)
    sample = pd.read_csv(root / "sample_submission.csv")
    sample.rename(columns={"id": "image_name"})[["image_name", "malignant"]].to_csv(
        root / "sample_submission.csv", index=False)
    path = init("melanoma", {"data_dir": str(root), "metric": "roc_auc"}, folder=tmp_path)
    spec = load_spec(str(path))
    assert (spec.id_column, spec.target_column, spec.group_column, spec.task) == \
        ("image_name", "diagnosis", "patient_id", "binary")
    assert "patient or user id" in path.read_text()
    data = load_data(spec)
    assert data.classes == ["benign", "malignant"] and len(set(data.groups)) == 8


def test_two_candidate_label_columns_are_one_line_until_one_is_given(tmp_path):
    root = write_competition(tmp_path / "data")
    labels = pd.read_csv(root / "train.csv")
    labels["site"] = ["head", "torso"] * (len(labels) // 2)
    labels.rename(columns={"label": "kind"}).to_csv(root / "train.csv", index=False)
    with pytest.raises(KitError, match=r"cannot tell the label column among kind, site: make init target_column="):
        init("two", {"data_dir": str(root)}, folder=tmp_path)
    assert load_spec(str(init("two", {"data_dir": str(root), "target_column": "kind", "metric": "log_loss"},
                              folder=tmp_path))).target_column == "kind"


def test_an_unknown_metric_is_said_in_the_spec_and_refused_until_it_is_set(tmp_path):
    path = _init(tmp_path, "class_folders", metric="")
    assert "metric: ''  # unknown: set it to the competition's" in path.read_text()
    with pytest.raises(KitError, match="metric: not set: give class_folders's .*log_loss.* or as metric="):
        load_spec(str(path))
    assert load_spec(str(path), {"metric": "log_loss"}).metric == "log_loss"


@pytest.mark.parametrize("listed, metric, said", [
    ("Log Loss", "log_loss", "# Kaggle lists 'Log Loss'"),
    ("Categorization Accuracy", "accuracy", "# Kaggle lists 'Categorization Accuracy'"),
    ("MAP@5", "", "# Kaggle lists 'MAP@5', which the kit does not score for a multiclass task"),
    ("Quadratic Weighted Kappa", "qwk", "# Kaggle lists 'Quadratic Weighted Kappa'"),
])
def test_the_metric_is_the_one_the_competition_lists_through_the_official_client(
        tmp_path, kaggle_server, monkeypatch, listed, metric, said):
    write_competition(tmp_path / "data" / "shapes")
    page = "https://www.kaggle.com/competitions/"
    kaggle_server.replies["ListCompetitions"] = (200, {"competitions": [
        {"ref": page + "shapes-2", "evaluationMetric": "AUC"}, {"ref": page + "shapes", "evaluationMetric": listed}]}, {})
    monkeypatch.chdir(tmp_path)
    assert main(["init", "competition=shapes"]) == 0
    text = (tmp_path / "competitions" / "shapes.yaml").read_text()
    assert f"metric: {metric or repr('')}  {said}" in text
    assert [c[1]["search"] for c in kaggle_server.calls if c[0] == "ListCompetitions"] == ["shapes"]


def test_a_refused_lookup_leaves_the_metric_unset_and_says_why(tmp_path, kaggle_server, monkeypatch):
    write_competition(tmp_path / "data" / "shapes")
    kaggle_server.replies["ListCompetitions"] = (403, {"code": 403, "message": "Permission denied"}, {})
    monkeypatch.chdir(tmp_path)
    assert main(["init", "competition=shapes"]) == 0
    line = next(x for x in (tmp_path / "competitions" / "shapes.yaml").read_text().splitlines() if x.startswith("metric"))
    assert line.startswith("metric: ''  # unknown (Kaggle refused the competition lookup: ") and "training refuses" in line


def test_it_never_overwrites_a_spec_unless_forced(tmp_path):
    path = _init(tmp_path, "label_in_filename")
    path.write_text("# mine\n")
    with pytest.raises(KitError, match="label_in_filename.yaml exists: make init never overwrites a spec \\(force=1"):
        init("label_in_filename", {"data_dir": str(tmp_path / "data")}, folder=tmp_path)
    assert path.read_text() == "# mine\n"
    init("label_in_filename", {"data_dir": str(tmp_path / "data"), "metric": "accuracy"}, force=True,
         folder=tmp_path)
    assert load_spec(str(path)).layout == "filename"


def test_command_line_keys_are_typed_and_checked_as_make_train_takes_them(tmp_path):
    path = _init(tmp_path, "class_folders", weights="null", backbones="vgg16,resnet50", epochs_head="2")
    spec = load_spec(str(path))
    assert spec.weights is None and spec.backbones == ["vgg16", "resnet50"] and spec.schedule[0].epochs == 2
    with pytest.raises(KitError, match="unknown key 'bakbones'"):
        init("class_folders", {"data_dir": str(tmp_path / "data"), "bakbones": "vgg16"}, force=True,
             folder=tmp_path)


def test_a_pixel_row_that_is_not_square_asks_for_its_shape_in_one_line(tmp_path):
    with pytest.raises(KitError, match="train_image_data_0.parquet: 140 pixel values a row is not a square image: "
                                       "make init image_shape=\\[H, W\\]"):
        layouts.bengali_parquet(tmp_path / "data")
        init("bengali", {"data_dir": str(tmp_path / "data")}, folder=tmp_path)


def test_no_data_or_no_sample_submission_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "competition=nothing-here"]) == 2
    assert "no data folder data/nothing-here: make download competition=nothing-here first" in \
        capsys.readouterr().err
    root = write_competition(tmp_path / "data" / "nosample")
    (root / "sample_submission.csv").unlink()
    assert main(["init", "competition=nosample"]) == 2
    assert "no sample submission CSV" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", [*READ, "tiny"])  # tiny: tests/helpers.py's competition
def test_from_the_download_to_a_valid_submission_with_no_hand_written_spec(tmp_path, name, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # competitions/ and submissions/ are made where the commands run
    getattr(layouts, name, write_competition)(tmp_path / "data" / name)
    small = [*(f"{k}={v}" for k, v in GIVEN.get(name, {}).items()), "weights=null", "backbones=vgg16", "n_folds=2", "image_size=32", "batch_size=8", "epochs_head=1",
             "epochs_finetune=1", "image_cache=disk", f"metric={SPECS.get(name, {}).get('metric', 'accuracy')}"]
    assert main(["init", f"competition={name}", *small]) == 0
    assert main(["all", f"competition={name}"]) == 0
    written = sorted((tmp_path / "submissions").glob(f"{name}-*.csv"))
    assert len(written) == 1
    capsys.readouterr()
    spec = load_spec(name)
    check(written[0], spec)
    assert "valid" in capsys.readouterr().out
    sample = pd.read_csv(spec.data_path / spec.sample_submission, dtype=str)
    assert pd.read_csv(written[0], dtype=str).iloc[:, 0].tolist() == sample.iloc[:, 0].tolist()


def test_a_broken_image_does_not_stop_it(tmp_path):
    root = write_competition(tmp_path / "data")
    (root / "train" / "tr000.png").write_bytes(b"\x89PNG cut short")
    text = init("broken", {"data_dir": str(root), "metric": "log_loss"}, folder=tmp_path).read_text()
    assert "image_size: 32  # the training images are about 20 px (the median of 16)" in text


def _pngs(folder, names, rng):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(folder / name)


def test_one_folder_for_train_and_test_and_one_hot_labels_as_the_sample_has(tmp_path):
    """Plant Pathology 2020: images/Train_<k>.jpg and images/Test_<k>.jpg, one 0/1 column per class."""
    rng, root = np.random.default_rng(0), tmp_path / "data"
    classes = ["healthy", "multiple_diseases", "rust", "scab"]
    _pngs(root / "images", [f"Train_{k}.png" for k in range(24)] + [f"Test_{k}.png" for k in range(6)], rng)
    labels = np.eye(4, dtype=int)[np.arange(24) % 4]
    pd.DataFrame(labels, columns=classes).assign(image_id=[f"Train_{k}" for k in range(24)])[
        ["image_id", *classes]].to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_id": [f"Test_{k}" for k in range(6)], **{c: 0.25 for c in classes}}).to_csv(
        root / "sample_submission.csv", index=False)
    spec = load_spec(str(init("plant", {"data_dir": str(root), "metric": "roc_auc"}, folder=tmp_path)))
    assert (spec.train_dir, spec.test_dir, spec.target_column, spec.task) == ("images", "images", classes, "multiclass")
    np.testing.assert_array_equal(load_data(spec).y, np.arange(24) % 4)


def test_container_copies_beside_the_images_and_two_sample_submissions(tmp_path):
    """Cassava: train_images/ plus train_tfrecords/ and test_tfrecords/ copies (here unreadable ones:
    the images are read, not the copies); an earlier stage's sample submission is left, and said."""
    root = write_competition(tmp_path / "data")
    for folder in ("train_tfrecords", "test_tfrecords"):
        (root / folder).mkdir()
        (root / folder / f"ld_{folder[:-10]}00-10.tfrec").write_bytes(b"not a tfrecord")
    (root / "sample_submission_stage1.csv").write_text((root / "sample_submission.csv").read_text())
    text = init("cassava", {"data_dir": str(root), "metric": "Categorization Accuracy"}, folder=tmp_path).read_text()
    spec = load_spec(str(tmp_path / "cassava.yaml"))
    assert (spec.image_form, spec.train_dir, spec.metric) == ("files", "train", "accuracy")
    assert spec.sample_submission == "sample_submission_stage1.csv" and "(also sample_submission.csv)" in text


def test_the_label_column_is_the_one_the_sample_submission_names_and_binary_says_what_it_submits(tmp_path):
    """SIIM-ISIC: diagnosis, benign_malignant and target beside each other; the sample asks for target."""
    root = write_competition(tmp_path / "data", classes=("0", "1"))
    labels = pd.read_csv(root / "train.csv", dtype=str)
    labels.assign(diagnosis=["nevus", "melanoma"] * 12, target=labels["label"]).drop(columns="label").to_csv(
        root / "train.csv", index=False)
    pd.read_csv(root / "sample_submission.csv").rename(columns={"0": "target"})[["id", "target"]].to_csv(
        root / "sample_submission.csv", index=False)
    text = init("siim", {"data_dir": str(root), "metric": "roc_auc"}, folder=tmp_path).read_text()
    assert "target_column: target" in text and "the submission holds P(1)" in text


def test_a_download_still_zipped_is_said(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "comp.zip").write_bytes(b"PK")
    with pytest.raises(KitError, match="still zipped \\(comp.zip\\): unzip it"):
        init("comp", {"data_dir": str(tmp_path / "data")}, folder=tmp_path)


def test_int_ids_in_two_folders_take_the_test_folder_the_sample_fits_best(tmp_path):
    rng, root = np.random.default_rng(0), tmp_path / "data"
    _pngs(root / "train", [f"{k}.png" for k in range(1, 25)], rng)
    _pngs(root / "valid", [f"{k}.png" for k in range(1, 7)], rng)
    pd.DataFrame({"id": range(1, 25), "label": ["x", "y"] * 12}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": range(1, 7), "label": "x"}).to_csv(root / "sample_submission.csv", index=False)
    spec = load_spec(str(init("ints", {"data_dir": str(root), "metric": "accuracy"}, folder=tmp_path)))
    assert (spec.train_dir, spec.test_dir) == ("train", "valid")


def test_of_two_sample_submissions_the_one_naming_the_test_images_is_taken(tmp_path):
    root = write_competition(tmp_path / "data")
    sample = pd.read_csv(root / "sample_submission.csv")
    sample.to_csv(root / "stage_2_sample_submission.csv", index=False)
    sample.assign(id=[f"old{k}" for k in range(len(sample))]).to_csv(root / "stage_1_sample_submission.csv",
                                                                      index=False)
    (root / "sample_submission.csv").unlink()
    text = init("stages", {"data_dir": str(root), "metric": "accuracy"}, folder=tmp_path).read_text()
    assert "sample_submission: stage_2_sample_submission.csv  # it names the test images (also " \
           "stage_1_sample_submission.csv)" in text


def test_test_images_split_over_two_folders_are_one_line(tmp_path):
    """Planet: test-jpg/ and test-jpg-additional/ together hold the sample's images."""
    root = write_competition(tmp_path / "data")
    (root / "test-extra").mkdir()
    for path in sorted((root / "test").iterdir())[:3]:
        path.rename(root / "test-extra" / path.name)
    with pytest.raises(KitError, match=r"test images are split over test/ \(5\), test-extra/ \(3\): the kit reads one"):
        init("planet", {"data_dir": str(root)}, folder=tmp_path)
