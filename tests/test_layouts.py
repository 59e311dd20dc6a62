"""Every common Kaggle image layout (tests/layouts.py builds each as the real competition lays it
out): the images decode to exactly what was stored, a fold trains, the submission validates;
broken records are skipped and listed in training, one clear line in test."""
import ast
import dataclasses
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit import KitError
from kit.cache import competition_images, load_images
from kit.config import load_spec
from kit.data import load_data
from kit.records import reader
from kit.submission import check, ensemble_submission
from kit.train import run_fold
from tests import layouts
from tests.helpers import ROOT, spec_file

HEAD_ONLY = [{"name": "head", "trainable": "none", "epochs": 1, "lr": 1e-3, "patience": 0}]

# Each form's spec keys, as a user would write them for the real competition.
SPECS = {
    "digit_recognizer": dict(image_form="pixels", id_column="ImageId", classes=["0", "1", "2"]),
    "fer_pixels_cell": dict(image_form="pixels", pixels="pixels", target_column="emotion",
                            image_shape=[12, 12]),
    "bengali_parquet": dict(image_form="parquet", id_column="image_id", pixels="[0-9]*", image_shape=[10, 14],
                            train_files=["train_image_data_*.parquet"], test_files=["test_image_data_*.parquet"]),
    "flowers_tfrecords": dict(image_form="tfrecord", layout="records", target_column="class",
                              train_files=["tfrecords-jpeg-*/train/*.tfrec", "tfrecords-jpeg-*/val/*.tfrec"],
                              test_files=["tfrecords-jpeg-*/test/*.tfrec"]),
    "isic_hdf5": dict(image_form="hdf5", task="binary", metric="roc_auc", train_csv="train-metadata.csv",
                      id_column="isic_id", target_column="target", train_files=["train-image.hdf5"],
                      test_files=["test-image.hdf5"]),
    "numpy_arrays": dict(image_form="numpy", first_id=0, train_files=["train_images.npy"],
                         test_files=["test_images.npy"]),
    "numpy_npz": dict(image_form="numpy", layout="records", first_id=0, record_image="x", target_column="y",
                      train_files=["train.npz"], test_files=["test.npz"]),
    "dicom": dict(task="binary", metric="log_loss", id_column="image_id", train_dir="train_images",
                  test_dir="test_images"),
    "rsna_long_format": dict(task="multilabel", metric="log_loss", layout="long", train_csv="stage_2_train.csv",
                             id_column="ID", target_column="Label",
                             sample_submission="stage_2_sample_submission.csv"),
}


def _competition(tmp_path, name, **keys):
    expected = getattr(layouts, name)(tmp_path / "data")
    spec = load_spec(str(spec_file(tmp_path, **{"schedule": HEAD_ONLY, **SPECS[name], **keys})))
    return spec, expected


@pytest.mark.parametrize("name", SPECS)
def test_each_form_reads_ids_labels_and_the_exact_pixels(tmp_path, name):
    spec, expected = _competition(tmp_path, name)
    data = load_data(spec)
    for side, table in (("train", data.train), ("test", data.test)):
        want = getattr(expected, side)
        assert sorted(table["id"]) == sorted(map(str, want)), side
        read = reader(spec)
        for i, path in zip(table["id"], table["path"]):
            image = want[_key(want, i)][1] if side == "train" else want[_key(want, i)]
            np.testing.assert_array_equal(read.read(path), image, err_msg=f"{side} {i}")
    labels = {str(k): v[0] for k, v in expected.train.items()}
    assert data.unlabelled == []
    if spec.task == "multilabel":
        got = [sorted(c for c, on in zip(data.classes, row) if on) for row in data.y]
        assert got == [sorted(labels[i]) for i in data.train["id"]]
    else:
        assert [data.classes[int(k)] for k in data.y] == [str(labels[i]) for i in data.train["id"]]


def _key(want, i):
    return i if i in want else int(i)


@pytest.mark.slow
@pytest.mark.parametrize("name", SPECS)
def test_each_form_trains_a_fold_and_writes_a_valid_submission(tmp_path, name, capsys):
    spec, _ = _competition(tmp_path, name, image_cache="disk")
    run_fold(spec, "vgg16", 0)
    path = ensemble_submission(spec, "mean")
    check(path, spec)
    assert "valid" in capsys.readouterr().out
    submission, sample = pd.read_csv(path, dtype=str), pd.read_csv(spec.data_path / spec.sample_submission, dtype=str)
    assert submission.iloc[:, 0].tolist() == sample.iloc[:, 0].tolist()


def _rewrite_csv_cell(path, row, column, value):
    frame = pd.read_csv(path, dtype=str)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)


def test_broken_pixel_rows_are_skipped_and_listed_in_training_and_named_in_test(tmp_path):
    spec, _ = _competition(tmp_path, "digit_recognizer")
    train = spec.data_path / "train.csv"
    _rewrite_csv_cell(train, 5, "pixel7", "300")  # line 7
    lines = train.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0]  # a row one value short (line 4 of the file)
    train.write_text("\n".join(lines) + "\n")
    data = load_data(spec)
    images, test_images, bad = competition_images(spec, data, 32)
    assert len(images) == len(data.train)
    assert sorted(bad.values()) == ["line 4: 144 cells; the header has 145",
                                    "line 7: pixel value 300 is outside 0-255"]
    assert sorted(bad) == [f"{train}::2", f"{train}::5"]
    _rewrite_csv_cell(spec.data_path / "test.csv", 2, "pixel0", "-1")
    with pytest.raises(KitError, match=r"1 test images cannot be read.*test.csv::2: line 4: pixel value -1 is outside 0-255"):
        competition_images(spec, load_data(spec), 32)


def test_a_tfrecord_without_the_image_feature_is_skipped_in_training(tmp_path):
    spec, _ = _competition(tmp_path, "flowers_tfrecords", record_image="image_jpeg")
    data = load_data(spec)
    _, bad = load_images(data.train["path"], 16, "off", read=reader(spec))
    assert len(bad) == len(data.train)
    assert "the record has no feature 'image_jpeg' (features: " in next(iter(bad.values()))


def test_hdf5_images_without_labels_and_labels_without_images_are_counted(tmp_path):
    spec, _ = _competition(tmp_path, "isic_hdf5")
    labels = pd.read_csv(spec.data_path / "train-metadata.csv", dtype=str)
    unlabelled = labels["isic_id"][0]
    labels = pd.concat([labels.iloc[1:], pd.DataFrame({"isic_id": ["ISIC_9999999"], "target": ["1"]})])
    labels.to_csv(spec.data_path / "train-metadata.csv", index=False)
    data = load_data(spec)
    assert data.unlabelled == [f"{spec.data_path / 'train-image.hdf5'}::{unlabelled}"]
    _, bad = load_images(data.train["path"], 16, "off", read=reader(spec))
    assert bad == {f"{spec.data_path / 'train-image.hdf5'}::ISIC_9999999": "no such entry"}


@pytest.mark.parametrize("broken, reason", [
    ("dicom_without_pixels", "the DICOM file has no pixel data"),
    ("dicom_unknown_syntax", "transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100): "
                             "no installed decoder reads it"),
])
def test_an_unreadable_dicom_is_skipped_in_training_and_an_error_in_test(tmp_path, broken, reason):
    spec, _ = _competition(tmp_path, "dicom")
    data = load_data(spec)
    victim = data.train["path"][0]
    getattr(layouts, broken)(victim)
    train, test, bad = competition_images(spec, data, 16)
    assert list(bad) == [victim] and bad[victim].startswith(reason)
    getattr(layouts, broken)(data.test["path"][1])
    with pytest.raises(KitError, match=r"1 test images cannot be read .*" + re.escape(reason)):
        competition_images(spec, load_data(spec), 16)


def test_layouts_say_what_is_wrong_before_any_work(tmp_path):
    spec, _ = _competition(tmp_path, "bengali_parquet")
    with pytest.raises(KitError, match=r"no file matches 'train_images_\*.parquet' in .*: check train_files"):
        load_data(dataclasses.replace(spec, train_files=["train_images_*.parquet"]))
    with pytest.raises(KitError, match=r"train_image_data_0.parquet: 140 pixel columns; image_shape 12x12 needs 144"):
        load_images(load_data(spec).train["path"][:1], 16, "off", read=reader(dataclasses.replace(spec, image_shape=[12, 12])))


def test_train_and_test_may_be_stored_differently(tmp_path):
    spec, expected = _competition(tmp_path, "flowers_tfrecords", test_image_form="files", test_dir="test")
    (spec.data_path / "test").mkdir()
    for i, image in expected.test.items():
        Image.fromarray(image).save(spec.data_path / "test" / f"{i}.png")
    data = load_data(spec)
    assert all(p.endswith(".png") for p in data.test["path"]) and all("::" in p for p in data.train["path"])
    _, test_images, bad = competition_images(spec, data, 16)
    assert not bad and len(test_images) == len(expected.test)


def test_the_shipped_specs_read_their_competitions_layout(tmp_path):
    layouts.digit_recognizer(tmp_path / "digits")
    spec = load_spec("competitions/digit-recognizer.yaml", {"data_dir": str(tmp_path / "digits")})
    data = load_data(spec)
    assert data.test["id"].tolist() == [str(i) for i in range(1, 11)] and len(data.train) == 24
    assert reader(spec).read(data.test["path"][0], 96).shape == (96, 96, 3)
    # SIIM-ISIC: the same DICOM files under the melanoma competition's names and columns
    root = tmp_path / "melanoma"
    layouts.dicom(root)
    (root / "train_images").rename(root / "train")
    (root / "test_images").rename(root / "test")
    labels = pd.read_csv(root / "train.csv", dtype=str).rename(columns={"image_id": "image_name", "label": "target"})
    labels["patient_id"] = [f"IP_{k // 2}" for k in range(len(labels))]
    labels.to_csv(root / "train.csv", index=False)
    pd.read_csv(root / "sample_submission.csv", dtype=str).set_axis(["image_name", "target"], axis=1).to_csv(
        root / "sample_submission.csv", index=False)
    spec = load_spec("competitions/siim-isic-melanoma-classification.yaml", {"data_dir": str(root)})
    data = load_data(spec)
    assert all(p.endswith(".dcm") for p in data.train["path"]) and list(data.groups[:2]) == ["IP_0", "IP_0"]
    _, _, bad = competition_images(spec, data, 16)
    assert not bad


def test_the_layout_libraries_are_imported_only_by_what_reads_that_form():
    """pandas and Keras import pyarrow and h5py themselves; the kit imports them (and pydicom)
    only inside the functions that read those forms, and nothing at start imports pydicom."""
    for path in (ROOT / "kit").glob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module-level statements only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in ("pyarrow", "h5py", "pydicom")], path.name
    code = "import sys, kit.cli, kit.data, kit.cache, kit.train; print('pydicom' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
