"""Every common Kaggle image layout (tests/layouts.py builds each as the real competition lays it
out): the images decode to exactly what was stored, a fold trains, the submission validates;
broken records are skipped and listed in training, one clear line in test."""
import ast
import contextlib
import dataclasses
import gzip
import io
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from kit import KitError
from kit.cache import competition_images, load_images
from kit.config import load_spec
from kit.containers import reader
from kit.data import load_data
from kit.layouts import LAYOUTS
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
    "class_folders": dict(layout="folders"),
    "label_in_filename": dict(layout="filename"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_has_an_example_competition_that_it_reads(layout):
    """The layout registry (kit/layouts.py), entry by entry: each is read, exactly, by the test
    below on an example competition of its own in tests/layouts.py."""
    examples = [name for name, keys in SPECS.items() if keys.get("layout", "csv") == layout]
    assert examples, f"layout {layout!r} (kit/layouts.py) has no example competition in tests/layouts.py and SPECS"


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
    assert bad == {f"{spec.data_path / 'train-image.hdf5'}::no image for id ISIC_9999999":
                   "no record in the hdf5 files has this id"}


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


def test_numbered_records_and_ids_that_do_not_line_up_are_one_line_naming_first_id(tmp_path):
    spec, _ = _competition(tmp_path, "numpy_arrays", first_id=1)  # train.csv counts from 0: off by one
    with pytest.raises(KitError, match=r"1 of 24 train ids have no image in train_images.npy, e.g. '0': check "
                                       r"id_column; the records have no 'id' field, so they are numbered 1..24 "
                                       r"from first_id \(1\)"):
        load_data(spec)


def test_arrays_of_any_integer_type_and_channels_first_read_as_stored(tmp_path):
    spec, expected = _competition(tmp_path, "numpy_arrays")
    train = np.load(spec.data_path / "train_images.npy")
    np.save(spec.data_path / "train_images.npy", train.astype(np.int64))  # np.array of Python ints
    np.save(spec.data_path / "test_images.npy", np.load(spec.data_path / "test_images.npy").transpose(0, 3, 1, 2))
    data, read = load_data(spec), reader(spec)
    for i, path in zip(data.train["id"], data.train["path"]):
        np.testing.assert_array_equal(read.read(path), expected.train[int(i)][1])
    for i, path in zip(data.test["id"], data.test["path"]):
        np.testing.assert_array_equal(read.read(path), expected.test[int(i)])
    np.save(spec.data_path / "train_images.npy", train.astype(np.int64) * 2)
    _, bad = load_images(load_data(spec).train["path"], 16, "off", read=reader(spec))
    assert "is outside 0-255 (a int64 array; 16-bit images are uint16)" in next(iter(bad.values()))


def test_one_npz_holding_train_and_test_arrays(tmp_path):
    spec, expected = _competition(tmp_path, "numpy_npz")
    with np.load(spec.data_path / "train.npz") as train, np.load(spec.data_path / "test.npz") as test:
        np.savez(spec.data_path / "mnist.npz", x_train=train["x"], y_train=train["y"], x_test=test["x"])
    keras_style = dict(train_files=["mnist.npz"], test_files=["mnist.npz"], record_image="x_train",
                       target_column="y_train")
    data = load_data(dataclasses.replace(spec, **keras_style, test_record_image="x_test"))
    np.testing.assert_array_equal(reader(spec).read(data.test["path"][3]), expected.test[3])
    with pytest.raises(KitError, match=r"10 images are both train and test images, .*test_record_image"):
        load_data(dataclasses.replace(spec, **keras_style))


def test_parquet_images_must_be_cached(tmp_path):
    with pytest.raises(KitError, match=r"image_cache: off reads images out of order.*cache parquet images"):
        load_spec(str(spec_file(tmp_path, image_form="parquet", image_cache="off")))


def test_broken_tfrecord_files_are_one_line_and_empty_image_bytes_are_skipped(tmp_path):
    spec, _ = _competition(tmp_path, "flowers_tfrecords")
    shard = sorted((spec.data_path).glob("tfrecords-jpeg-*/train/*.tfrec"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[:-7])
    with pytest.raises(KitError, match=r"00-16x16-.*\.tfrec: not a TFRecord file, or a truncated one \(record \d+"):
        load_data(spec)
    shard.write_bytes(gzip.compress(data))
    with pytest.raises(KitError, match=r"a GZIP-compressed TFRecord file: decompress it"):
        load_data(spec)
    import tensorflow as tf
    with tf.io.TFRecordWriter(str(shard)) as w:
        w.write(tf.train.Example(features=tf.train.Features(feature={
            "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b""])),
            "class": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
            "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"empty1"]))})).SerializeToString())
    data = load_data(spec)
    _, bad = load_images(data.train["path"], 16, "off", read=reader(spec))
    assert list(bad.values()) == ["the image bytes are empty"]


def test_long_labels_with_repeated_rows_are_read_once_and_conflicting_ones_named(tmp_path):
    spec, _ = _competition(tmp_path, "rsna_long_format")
    path = spec.data_path / "stage_2_train.csv"
    labels = pd.read_csv(path, dtype=str)
    pd.concat([labels, labels.iloc[:6]]).to_csv(path, index=False)  # as RSNA's stage_2_train.csv
    data = load_data(spec)
    assert len(data.train) == len(labels) // 3 and data.notes[0].startswith(f"{path}: 6 repeated rows dropped")
    flipped = labels.iloc[:1].assign(Label=lambda f: 1 - f["Label"].astype(int))
    pd.concat([labels, flipped]).to_csv(path, index=False)
    with pytest.raises(KitError, match=rf"id {labels['ID'][0]!r} has rows with different labels"):
        load_data(spec)


def test_a_sample_whose_ids_end_in_class_names_is_not_taken_for_a_long_one():
    from kit.layouts import split_long
    assert split_long([f"Test_{k}" for k in range(12)], [str(k) for k in range(12)]) is None
    assert split_long(["a_x", "a_y", "b_x", "b_y"], ["x", "y"]) == (["a", "a", "b", "b"], ["x", "y", "x", "y"])


def test_pixel_tables_as_they_come(tmp_path):
    """mnist-in-csv's 1x1..28x28 columns in file order, FER2013's " pixels" column, a BOM."""
    spec, expected = _competition(tmp_path, "digit_recognizer")
    for name in ("train.csv", "test.csv"):
        table = pd.read_csv(spec.data_path / name)
        table.columns = [f"{1 + k // 12}x{1 + k % 12}" if c.startswith("pixel") else c
                         for k, c in zip(range(-1 if "label" in table else 0, len(table.columns)), table.columns)]
        table.to_csv(spec.data_path / name, index=False, encoding="utf-8-sig")
    spec = dataclasses.replace(spec, pixels="*x*")
    data = load_data(spec)
    np.testing.assert_array_equal(reader(spec).read(data.test["path"][0]), expected.test[1])
    spec, expected = _competition(tmp_path / "fer", "fer_pixels_cell")
    for name in ("train.csv", "test.csv"):
        table = pd.read_csv(spec.data_path / name)
        table.rename(columns={"pixels": " pixels"}).to_csv(spec.data_path / name, index=False)
    data = load_data(spec)
    np.testing.assert_array_equal(reader(spec).read(data.train["path"][0]), expected.train[1][1])


def test_dicom_files_as_they_come(tmp_path):
    """Files without the 128-byte preamble, or bare datasets, are read; cut pixel data is said as such."""
    import pydicom
    spec, expected = _competition(tmp_path, "dicom")
    data = load_data(spec)
    plain = data.train["path"][0]  # the first of each four is uncompressed MONOCHROME2
    ds = pydicom.dcmread(plain)
    ds.preamble = None
    ds.save_as(plain, enforce_file_format=False)
    np.testing.assert_array_equal(reader(spec).read(plain), expected.train[data.train["id"][0]][1])
    del ds.file_meta
    ds.save_as(plain, enforce_file_format=False, implicit_vr=False, little_endian=True)
    assert b"DICM" not in Path(plain).read_bytes()[:200]
    np.testing.assert_array_equal(reader(spec).read(plain), expected.train[data.train["id"][0]][1])
    cut = data.train["path"][4]
    ds = pydicom.dcmread(cut)
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(cut, enforce_file_format=True)
    _, bad = load_images([cut], 16, "off", read=reader(spec))
    assert bad[cut].startswith("its pixel data cannot be decoded (")


def test_hugging_face_parquet_images_are_read_from_their_bytes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    image = np.random.default_rng(0).integers(0, 255, (9, 11, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"image": [{"bytes": buffer.getvalue(), "path": "a.png"}], "label": [1]}), path)
    np.testing.assert_array_equal(reader(load_spec(str(spec_file(tmp_path)))).read(f"{path}::0"), image)


def test_hdf5_entries_are_read_while_another_waits_on_storage(tmp_path, monkeypatch):
    """h5py runs one call at a time in a process: it only finds where an entry's bytes are; they
    are read and decoded outside it, so records read in parallel as files do. Slow storage here:
    the first read of an entry's bytes waits until another thread has read its own entry."""
    spec, expected = _competition(tmp_path, "isic_hdf5")
    data = load_data(spec)
    read, pread, first = reader(spec), os.pread, []
    waiting, other_done = threading.Event(), threading.Event()

    def slow_storage(fd, n, offset):
        if not waiting.is_set():
            waiting.set()
            other_done.wait(10)
        return pread(fd, n, offset)
    monkeypatch.setattr(os, "pread", slow_storage)
    reading = threading.Thread(target=lambda: first.append(read.read(data.train["path"][0])))
    reading.start()
    assert waiting.wait(10), "no read of an entry's bytes was seen waiting on storage"
    np.testing.assert_array_equal(read.read(data.train["path"][1]), expected.train[data.train["id"][1]][1])
    other_done.set()
    reading.join()
    np.testing.assert_array_equal(first[0], expected.train[data.train["id"][0]][1])


def test_hdf5_entries_of_any_storage_read_as_stored(tmp_path):
    """Entries h5py must read itself (compressed), pixels of another byte order, opaque bytes; an
    entry that is no image is skipped, saying what it holds."""
    spec, expected = _competition(tmp_path, "isic_hdf5")
    ids = list(load_data(spec).train["id"][:4])
    image = expected.train[ids[0]][1]
    with h5py.File(spec.data_path / "train-image.hdf5", "a") as f:
        for i in ids:
            del f[i]
        f.create_dataset(ids[0], data=image, chunks=True, compression="gzip")
        f.create_dataset(ids[1], data=image.astype(">u2") * 257)
        f.create_dataset(ids[2], data=np.void(layouts._png(image)))
        f.create_dataset(ids[3], data=1.5)
    data, read = load_data(spec), reader(spec)
    for path in data.train["path"][:3]:
        np.testing.assert_array_equal(read.read(path), image)
    _, bad = load_images(data.train["path"], 16, "off", read=read)
    assert list(bad.values()) == ["the entry holds float64 of shape (), neither an encoded image nor one "
                                  "image's pixels"]


def test_an_npz_array_is_loaded_once_when_threads_ask_at_once(tmp_path, monkeypatch):
    spec, _ = _competition(tmp_path, "numpy_npz")
    names, read, load, loads = load_data(spec).train["path"][:2], reader(spec), np.load, []
    together = threading.Barrier(2, timeout=0.5)  # two loads at once meet here; one alone waits it out

    def counted(*args, **kwargs):
        loads.append(args[0])
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()
        return load(*args, **kwargs)
    monkeypatch.setattr(np, "load", counted)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(read.read, names))
    assert len(loads) == 1


def test_an_hdf5_of_groups_or_image_arrays_says_what_it_holds(tmp_path):
    spec, _ = _competition(tmp_path, "isic_hdf5")
    path = spec.data_path / "train-image.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/images", data=np.zeros((24, 16, 16, 3), np.uint8))
        f.create_dataset("data/labels", data=np.zeros(24, np.int64))
    with pytest.raises(KitError, match=r"train-image.hdf5: .*; it holds /data/images \(24, 16, 16, 3\) uint8, "
                                       r"/data/labels \(24,\) int64"):
        load_data(spec)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((24, 16, 16), np.uint8))
    with pytest.raises(KitError, match=r"train-image.hdf5: .*; it holds /images \(24, 16, 16\) uint8"):
        load_data(spec)
    from kit.init import init
    with pytest.raises(KitError, match=r"no layout reads it \(.*train-image.hdf5: .*; it holds /images \(24, 16, "):
        init("isic", {"data_dir": str(spec.data_path), "metric": "roc_auc"}, folder=tmp_path)


def test_a_broken_parquet_pixel_row_is_named_by_its_image_id(tmp_path):
    spec, _ = _competition(tmp_path, "bengali_parquet")
    path = spec.data_path / "test_image_data_0.parquet"
    table = pq.read_table(path)
    pixels = table.column("7").to_pylist()
    pixels[2] = None
    pq.write_table(table.set_column(table.schema.get_field_index("7"), "7", pa.array(pixels, pa.uint8())), path)
    with pytest.raises(KitError, match=r"1 test images cannot be read .*test_image_data_0.parquet::2: image_id "
                                       r"'Test_2': a pixel value is missing"):
        competition_images(spec, load_data(spec), 16)
