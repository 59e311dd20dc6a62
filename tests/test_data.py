import io

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit import KitError
from kit.cache import load_images
from kit.config import load_spec
from kit.data import Data, load_data
from kit.decode import BadImage, read_rgb
from tests.helpers import image, spec_file, write_competition


def _spec(tmp_path, **keys):
    return load_spec(str(spec_file(tmp_path, **keys)))


def test_the_log_quotes_each_class_so_that_a_comma_in_a_name_is_not_two_classes(tmp_path):
    from kit.folds import load_fold

    write_competition(tmp_path / "data", classes=("x, y", "z"))
    said = []
    load_fold(_spec(tmp_path), "vgg16", 0, log=said.append)
    assert said[0].endswith("classes: 'x, y', 'z'")
    with pytest.raises(KitError, match=r"label 'z' is not in classes \('x, y'\)"):
        load_data(_spec(tmp_path, classes=["x, y"]))


def test_csv_layout_finds_each_image_whatever_its_extension(tmp_path):
    root = write_competition(tmp_path / "data", ext=".jpg")
    data = load_data(_spec(tmp_path))
    assert data.classes == ["a", "b"]
    assert data.train["path"].str.endswith(".jpg").all() and len(data.train) == 24
    assert list(data.y[:4]) == [0, 1, 0, 1]
    assert data.test["id"].tolist() == pd.read_csv(root / "sample_submission.csv")["id"].tolist()


def test_ids_may_carry_the_extension_or_the_spec_adds_it(tmp_path):
    root = write_competition(tmp_path / "data")
    frame = pd.read_csv(root / "train.csv")
    frame.assign(id=frame["id"] + ".png").to_csv(root / "train.csv", index=False)
    assert load_data(_spec(tmp_path)).train["path"].str.endswith("tr000.png").any()
    frame.to_csv(root / "train.csv", index=False)
    assert len(load_data(_spec(tmp_path, image_ext="png")).train) == 24


def test_ids_keep_leading_zeros_and_int_labels_sort_numerically(tmp_path):
    root = write_competition(tmp_path / "data")
    frame = pd.read_csv(root / "train.csv", dtype=str)
    for i, old in enumerate(frame["id"]):
        (root / "train" / f"{old}.png").rename(root / "train" / f"{i:04d}.png")
    labels = [str(v) for v in (2, 10, 1) * 8]
    train = pd.DataFrame({"id": [f"{i:04d}" for i in range(24)], "label": labels})
    train.to_csv(root / "train.csv", index=False)
    data = load_data(_spec(tmp_path))
    assert data.train["id"][0] == "0000"
    assert data.classes == ["1", "2", "10"] and list(data.y[:3]) == [1, 2, 0]


def test_folder_per_class_layout(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / "data" / "train" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(image(rng, "a")).save(tmp_path / "data" / "train" / label / f"{i}.jpg")
    (tmp_path / "data" / "train" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / "test").mkdir()
    Image.fromarray(image(rng, "a")).save(tmp_path / "data" / "test" / "x1.jpg")
    data = load_data(_spec(tmp_path, layout="folders", test_ids="folder", task="binary"))
    assert data.classes == ["cats", "dogs"] and data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.train["id"][0] == "cats/0.jpg" and data.test["id"].tolist() == ["x1"]
    elsewhere = tmp_path / "foxes"  # a class folder linked in from elsewhere is read like the others
    (tmp_path / "data" / "train" / "dogs").rename(elsewhere)
    (tmp_path / "data" / "train" / "dogs").symlink_to(elsewhere)
    (tmp_path / "data" / "train" / "owls").mkdir()
    data = load_data(_spec(tmp_path, layout="folders", test_ids="folder", task="binary"))
    assert data.classes == ["cats", "dogs"] and data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.notes == [f"{tmp_path / 'data' / 'train'}: no images in owls: not classes of this data"]
    for path in (tmp_path / "data" / "train" / "cats").iterdir():
        path.unlink()
    (tmp_path / "data" / "train" / "dogs").unlink()
    with pytest.raises(KitError, match="train: no training images"):
        load_data(_spec(tmp_path, layout="folders", test_ids="folder", task="binary"))


def test_label_in_file_name_layout_like_dogs_vs_cats(tmp_path):
    rng = np.random.default_rng(0)
    for folder, names in (("train", ["cat.1.jpg", "dog.1.jpg", "cat.2.jpg"]), ("test", ["1.jpg", "2.jpg"])):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for name in names:
            Image.fromarray(image(rng, "a")).save(tmp_path / "data" / folder / name)
    sample = pd.DataFrame({"id": [2, 1], "label": 0.5})
    sample.to_csv(tmp_path / "data" / "sample_submission.csv", index=False)
    spec = load_spec("dogs-vs-cats-redux-kernels-edition", {"data_dir": str(tmp_path / "data")})
    data = load_data(spec)
    assert data.classes == ["cat", "dog"] and dict(zip(data.train["id"], data.y)) == {
        "cat.1.jpg": 0, "cat.2.jpg": 0, "dog.1.jpg": 1}
    assert data.test["path"].str.endswith(("2.jpg", "1.jpg")).all() and data.test["id"].tolist() == ["2", "1"]
    (tmp_path / "data" / "train" / "bird.3.jpg").write_bytes(b"")
    with pytest.raises(KitError, match="finds no label in 1 file names.*bird.3.jpg"):
        load_data(spec)


def test_test_ids_from_the_folder_follow_the_sample_submission_extension(tmp_path):
    root = write_competition(tmp_path / "data")
    assert load_data(_spec(tmp_path, test_ids="folder")).test["id"][0] == "te000"
    sample = pd.read_csv(root / "sample_submission.csv")
    sample.assign(id=sample["id"] + ".png").to_csv(root / "sample_submission.csv", index=False)
    assert load_data(_spec(tmp_path, test_ids="folder")).test["id"][0] == "te000.png"


def test_multilabel_from_separated_tags_and_from_one_hot_columns(tmp_path):
    root = write_competition(tmp_path / "data")
    tags = ["a b", "b", "c a", ""] * 6
    frame = pd.read_csv(root / "train.csv").assign(tags=tags)
    frame.to_csv(root / "train.csv", index=False)
    data = load_data(_spec(tmp_path, task="multilabel", target_column="tags", metric="f2"))
    assert data.classes == ["a", "b", "c"]
    assert data.y[:4].tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]]
    onehot = frame.assign(x=[1, 0] * 12, y=[0, 1] * 12)
    onehot.to_csv(root / "train.csv", index=False)
    data = load_data(_spec(tmp_path, task="multiclass", target_column=["x", "y"]))
    assert data.classes == ["x", "y"] and data.y[:2].tolist() == [0, 1]
    onehot.assign(y=1).to_csv(root / "train.csv", index=False)
    with pytest.raises(KitError, match="train.csv, line 2 \\(id 'tr000'\\): 2 classes set"):
        load_data(_spec(tmp_path, task="multiclass", target_column=["x", "y"]))


@pytest.mark.parametrize("keys, edit, message", [
    ({}, lambda r: [(r / "train" / f"tr{i:03d}.png").unlink() for i in range(13)],
     "13 of 24 train images are missing, e.g. "),
    ({}, lambda r: [(r / "train" / f"tr{i:03d}.png").unlink() for i in range(13)],
     "check train_dir, image_ext and id_column in the spec"),
    ({}, lambda r: (r / "test" / "te003.png").unlink(), "1 of 8 test images are missing, e.g. "),
    ({}, lambda r: pd.DataFrame({"id": ["../../secret"], "label": ["a"]}).to_csv(r / "train.csv"),
     "train id '../../secret' points outside the data folder"),
    ({}, lambda r: pd.DataFrame({"id": ["/etc/passwd"], "label": ["a"]}).to_csv(r / "train.csv"),
     "points outside the data folder"),
    ({"target_column": "class"}, lambda r: None, "has no column 'class' (columns: id, label)"),
    ({"task": "binary"}, lambda r: pd.DataFrame({"id": ["tr000", "tr001", "tr002"], "label": ["a", "b", "c"]})
     .to_csv(r / "train.csv"), "a binary task needs 2 classes, found 3"),
    ({"classes": ["a"]}, lambda r: None, "train.csv, line 3 (id 'tr001'): label 'b' is not in classes ('a')"),
    ({}, lambda r: pd.DataFrame({"id": ["tr000", "tr001", "tr002"], "label": ["a", "", "b"]}).to_csv(
        r / "train.csv", index=False), "train.csv, line 3 (id 'tr001'): an empty label"),
    ({}, lambda r: (r / "sample_submission.csv").unlink(),
     "no sample submission (or set test_ids: folder) at"),
    ({}, lambda r: (r / "train.csv").write_bytes(b"\xff\xfe\x00bad"), "cannot read as CSV"),
    ({}, lambda r: pd.DataFrame({"id": ["tr000", "tr001", "tr000"], "label": ["a", "b", "b"]})
     .to_csv(r / "train.csv"), "train.csv: 1 ids appear more than once, e.g. 'tr000' (2 times)"),
    ({"test_ids": "folder"}, lambda r: (r / "test" / "te001.png").rename(r / "test" / "te000.jpg"),
     "test: 1 ids appear more than once, e.g. 'te000'"),
    ({}, lambda r: (r / "sample_submission.csv").write_text("id,a,b\n"),
     "sample_submission.csv: no test images (its rows name them): nothing to predict"),
    ({"test_ids": "folder"}, lambda r: [p.unlink() for p in (r / "test").iterdir()],
     "test: no test images: nothing to predict"),
    ({}, lambda r: (r / "train.csv").write_text("id,label\n"), "train.csv: no training images (or labels) in it"),
])
def test_bad_data_is_one_clear_line(tmp_path, keys, edit, message):
    root = write_competition(tmp_path / "data")
    edit(root)
    with pytest.raises(KitError) as e:
        load_data(_spec(tmp_path, **keys))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_data_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(KitError, match="no data folder .*make download competition=tiny"):
        load_data(_spec(tmp_path))


def _saved(tmp_path, name, array=None, mode=None, **save):
    path = tmp_path / name
    Image.fromarray(array, mode).save(path, **save) if mode else Image.fromarray(array).save(path, **save)
    return path


def test_every_image_kind_becomes_8bit_rgb(tmp_path):
    gray = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 7)])
    deep = (gray.astype(np.uint16) * 257)
    paths = {
        "gray": _saved(tmp_path, "g.png", gray),
        "rgba": _saved(tmp_path, "a.png", rgba),
        "palette": tmp_path / "p.png",
        "gray16": _saved(tmp_path, "g16.png", deep),
        "tif": _saved(tmp_path, "t.tif", np.dstack([gray] * 3)),
        "cmyk": tmp_path / "c.jpg",
    }
    Image.fromarray(np.dstack([gray] * 3)).quantize(16).save(paths["palette"], transparency=0)
    Image.fromarray(np.dstack([gray] * 3)).convert("CMYK").save(paths["cmyk"], quality=100)
    cv2.imwrite(str(tmp_path / "rgb16.png"), np.dstack([deep] * 3))
    paths["rgb16"] = tmp_path / "rgb16.png"
    for kind, path in paths.items():
        arr = read_rgb(path)
        assert arr.dtype == np.uint8 and arr.shape == (16, 16, 3), kind
        tolerance = 8 if kind == "cmyk" else 1
        assert np.abs(arr[..., 1].astype(int) - gray).max() <= tolerance, kind
    assert read_rgb(paths["gray"], size=8).shape == (8, 8, 3)


def test_truncated_and_corrupt_images_are_reported_not_half_decoded(tmp_path):
    good = _saved(tmp_path, "good.jpg", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    buffer = io.BytesIO()
    Image.open(good).save(buffer, "PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for name in ("cut.jpg", "junk.png", "cut.png"):
        with pytest.raises(BadImage):
            read_rgb(tmp_path / name, 32)
    _, bad = load_images([str(good)] + [str(tmp_path / n) for n in ("cut.jpg", "junk.png")], 32, mode="off")
    assert sorted(bad) == [str(tmp_path / "cut.jpg"), str(tmp_path / "junk.png")]
    assert "truncated" in bad[str(tmp_path / "cut.jpg")]


def test_a_photo_tagged_rotate_90_is_read_upright(tmp_path):
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[:10] = 255  # white at the top of the upright picture
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(tall, 1)))  # the camera's sensor holds it sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    upright = read_rgb(tmp_path / "phone.jpg")
    assert upright.shape == (40, 20, 3) and upright[:10].mean() > 200 and upright[20:].mean() < 50


def test_a_class_with_fewer_images_than_folds_is_said_once_in_the_kits_words(tmp_path, capsys, recwarn):
    from kit.config import Spec
    from kit.folds import fold_warnings, make_folds

    y = np.array([0] * 12 + [1] * 12 + [2] * 2)
    data = Data(["a", "b", "rare"], pd.DataFrame({"id": [f"i{k}" for k in range(26)]}), y, None, None)
    make_folds(data, 4, seed=0)  # says nothing itself: the data check before any work says it (once)
    assert capsys.readouterr().out == "" and not [w for w in recwarn if "least populated" in str(w.message)]
    assert fold_warnings(Spec("x", n_folds=4, batch_size=4), data) == [
        "class 'rare' has 2 images, fewer than the 4 folds: 2 of them validate on none of it, so "
        "their scores say nothing about it"]


def test_a_file_no_decoder_reads_is_a_reason_not_a_warning_on_the_screen(tmp_path, capfd):
    bad = tmp_path / "broken.hdr"  # a format Pillow does not know, so OpenCV tries it
    bad.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 4 +X 4\nxx")
    with pytest.raises(BadImage, match="not an image file"):
        read_rgb(bad)
    assert capfd.readouterr().err == ""  # OpenCV would print "imread_(...): can't read data ... RGBE read error"
