"""Tiny synthetic Kaggle competitions, each laid out on disk exactly as the real competition it imitates.

Every builder writes a data folder under `root` and returns the `Expected` ids, labels and pixels, so a test
can run the kit on each form and check what it decoded. Builders are deterministic under `seed`; images are
small, noisy, and carry a class signal (brightness, colour or a bright quadrant) so a model can learn.
"""
import io
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

PALETTE = np.array([(200, 60, 60), (60, 60, 200), (60, 200, 60)], np.float32)
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root, so our synthetic UIDs are well formed
RESCALE = (1, -1024)  # slope, intercept: stored 12-bit values to Hounsfield units, as CT scanners write
WINDOW = (40, 400)  # CT brain window centre/width, as in the RSNA competitions
CT_SHAPE = (32, 36)  # pylibjpeg-openjpeg always encodes 6 wavelet resolutions, which needs sides >= 32


@dataclass
class Expected:
    """What a correct reader recovers from a layout: `train` id -> (label, image), `test` id -> image.

    An image is the exact (H, W, 3) uint8 RGB array before any resize; grayscale is repeated to 3 channels. A
    label is the class name as the labels file holds it, a str (for a multilabel layout, the list of positive
    class names). A DICOM image is the window applied to the rescaled values, in float64:
        v = stored * RescaleSlope + RescaleIntercept
        out = np.rint(np.clip((v - (WindowCenter - WindowWidth / 2)) / WindowWidth * 255, 0, 255))
    then 255 - out for MONOCHROME1. That formula is simpler than the DICOM standard's (which uses c - 0.5 and
    w - 1) and ties round half to even, so a reader using either may differ by one grey level.
    """

    train: dict
    test: dict


def _classes(rng, n, k=3):
    """n shuffled class indices with every class present (a random draw could miss one in a tiny set)."""
    return rng.permutation(np.arange(n) % k)


def _gray(rng, k, h, w):
    return (50 + 70 * k + rng.normal(0, 20, (h, w))).clip(0, 255).astype(np.uint8)


def _colour(rng, k, h, w):
    return (PALETTE[k] + rng.normal(0, 30, (h, w, 3))).clip(0, 255).astype(np.uint8)


def _rgb(gray):
    return np.repeat(gray[..., None], 3, axis=-1)


def _png(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _hex_ids(rng, n, width, first="abcdef"):
    """Unique hex ids whose first character is from `first`: a letter by default, so pandas never parses a
    column of them as numbers."""
    tails = rng.choice(16 ** (width - 1), n, replace=False)
    return [rng.choice(list(first)) + f"{v:0{width - 1}x}" for v in tails]


def _test_pngs(rng, root, n_test, sample_columns):
    """test/<id>.png and a sample submission whose first column names them (their order shuffled)."""
    (root / "test").mkdir(parents=True)
    ids, test = _hex_ids(rng, n_test, 6), {}
    for i, k in zip(ids, _classes(rng, n_test)):
        test[i] = _colour(rng, k, 10, 12)
        Image.fromarray(test[i]).save(root / "test" / f"{i}.png")
    pd.DataFrame({"id": ids, **sample_columns}).to_csv(root / "sample_submission.csv", index=False)
    return test


def class_folders(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 0) -> Expected:
    """One folder per class (train/<class>/<name>.png, an Intel Image Classification-style download);
    an image's id is its path below train/."""
    rng, root = np.random.default_rng(seed), Path(root)
    train = {}
    for n, k in enumerate(_classes(rng, n_train)):
        name, image = f"{['forest', 'glacier', 'sea'][k]}/{n:04d}.png", _colour(rng, k, 10, 12)
        (root / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "train" / name)
        train[name] = (name.split("/")[0], image)
    return Expected(train, _test_pngs(rng, root, n_test, {"label": "sea"}))


def label_in_filename(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 0) -> Expected:
    """dogs-vs-cats: train/<label>.<n>.png, the label read off the name; an image's id is its file name."""
    rng, root = np.random.default_rng(seed), Path(root)
    (root / "train").mkdir(parents=True)
    train = {}
    for n, k in enumerate(_classes(rng, n_train)):
        name, image = f"{['cat', 'dog', 'fox'][k]}.{n}.png", _colour(rng, k, 10, 12)
        Image.fromarray(image).save(root / "train" / name)
        train[name] = (name.split(".")[0], image)
    return Expected(train, _test_pngs(rng, root, n_test, {"label": "cat"}))


def digit_recognizer(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 0) -> Expected:
    """digit-recognizer: train.csv (label, pixel0..), test.csv (pixels only; ImageId is the 1-based row)."""
    rng, root = np.random.default_rng(seed), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    labels, tests = _classes(rng, n_train), _classes(rng, n_test)
    train = [_gray(rng, k, 12, 12) for k in labels]
    test = [_gray(rng, k, 12, 12) for k in tests]
    columns = [f"pixel{j}" for j in range(144)]
    frame = pd.DataFrame(np.stack(train).reshape(n_train, -1), columns=columns)
    frame.insert(0, "label", labels)
    frame.to_csv(root / "train.csv", index=False)
    pd.DataFrame(np.stack(test).reshape(n_test, -1), columns=columns).to_csv(root / "test.csv", index=False)
    sample = pd.DataFrame({"ImageId": range(1, n_test + 1), "Label": 0})
    sample.to_csv(root / "sample_submission.csv", index=False)
    return Expected({i + 1: (str(k), _rgb(g)) for i, (k, g) in enumerate(zip(labels, train))},
                    {i + 1: _rgb(g) for i, g in enumerate(test)})


def fer_pixels_cell(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 0) -> Expected:
    """Facial expression challenge: each image is ONE csv cell of space-separated grey levels (12x12).
    test.csv carries an id column here (the real one has only pixels)."""
    rng, root = np.random.default_rng(seed), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    labels, tests = _classes(rng, n_train), _classes(rng, n_test)
    train = [_gray(rng, k, 12, 12) for k in labels]
    test = [_gray(rng, k, 12, 12) for k in tests]
    cell = lambda g: " ".join(map(str, g.ravel()))
    pd.DataFrame({"emotion": labels, "pixels": map(cell, train)}).to_csv(root / "train.csv", index=False)
    test_ids = range(1, n_test + 1)
    pd.DataFrame({"id": test_ids, "pixels": map(cell, test)}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": test_ids, "emotion": 0}).to_csv(root / "sample_submission.csv", index=False)
    return Expected({i + 1: (str(k), _rgb(g)) for i, (k, g) in enumerate(zip(labels, train))},
                    {i: _rgb(g) for i, g in zip(test_ids, test)})


def _parquet_halves(root, split, ids, images):
    """Bengali.AI splits each set over numbered files of image_id + one uint8 column per pixel ("0", "1",
    ...); small row groups so a reader has to cope with several per file."""
    flat = np.stack(images).reshape(len(ids), -1)
    for part, rows in enumerate(np.array_split(np.arange(len(ids)), 2)):
        columns = {"image_id": pa.array([ids[r] for r in rows], pa.string())}
        columns |= {str(j): pa.array(flat[rows, j], pa.uint8()) for j in range(flat.shape[1])}
        pq.write_table(pa.table(columns), root / f"{split}_image_data_{part}.parquet", row_group_size=4)


def bengali_parquet(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 0) -> Expected:
    """Bengali.AI: train.csv (image_id,label) and grayscale 10x14 (non-square) images in split parquets."""
    rng, root = np.random.default_rng(seed), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    labels, tests = _classes(rng, n_train), _classes(rng, n_test)
    train = [_gray(rng, k, 10, 14) for k in labels]
    test = [_gray(rng, k, 10, 14) for k in tests]
    train_ids, test_ids = [f"Train_{i}" for i in range(n_train)], [f"Test_{i}" for i in range(n_test)]
    pd.DataFrame({"image_id": train_ids, "label": labels}).to_csv(root / "train.csv", index=False)
    _parquet_halves(root, "train", train_ids, train)
    _parquet_halves(root, "test", test_ids, test)
    pd.DataFrame({"image_id": test_ids, "label": 0}).to_csv(root / "sample_submission.csv", index=False)
    return Expected({i: (str(k), _rgb(g)) for i, k, g in zip(train_ids, labels, train)},
                    {i: _rgb(g) for i, g in zip(test_ids, test)})


def flowers_tfrecords(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 0) -> Expected:
    """tpu-getting-started: tfrecords-jpeg-16x16/{train,val,test}/NN-16x16-COUNT.tfrec of tf.train.Examples
    (image, class, id); test records lack class. Images are PNG, not JPEG as on Kaggle, so the expected
    pixels are exact. Val records are labelled, so Expected.train holds train and val alike."""
    import tensorflow as tf

    rng, folder = np.random.default_rng(seed), Path(root) / "tfrecords-jpeg-16x16"
    labels, tests = _classes(rng, n_train), _classes(rng, n_test)
    train = [_colour(rng, k, 16, 16) for k in labels]
    test = [_colour(rng, k, 16, 16) for k in tests]
    ids = _hex_ids(rng, n_train + n_test, 9)
    train_ids, test_ids = ids[:n_train], ids[n_train:]
    n_val = n_train // 4
    splits = {"train": np.array_split(np.arange(n_val, n_train), 2), "val": [np.arange(n_val)],
              "test": np.array_split(np.arange(n_test), 2)}
    as_bytes = lambda b: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))

    def record(image, id_, label=None):
        feature = {"image": as_bytes(_png(image)), "id": as_bytes(id_.encode())}
        if label is not None:  # test records carry no class
            feature["class"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    for split, shards in splits.items():
        (folder / split).mkdir(parents=True)
        for s, rows in enumerate(shards):
            with tf.io.TFRecordWriter(str(folder / split / f"{s:02d}-16x16-{len(rows)}.tfrec")) as writer:
                for r in rows:
                    args = (test[r], test_ids[r]) if split == "test" else (train[r], train_ids[r], labels[r])
                    writer.write(record(*args))
    pd.DataFrame({"id": test_ids, "label": 0}).to_csv(Path(root) / "sample_submission.csv", index=False)
    return Expected({i: (str(k), g) for i, k, g in zip(train_ids, labels, train)}, dict(zip(test_ids, test)))


def isic_hdf5(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 0) -> Expected:
    """ISIC 2024: {train,test}-image.hdf5 with one scalar dataset per isic_id holding an encoded image, and
    {train,test}-metadata.csv; binary target. Stored as np.bytes_ (HDF5 fixed-length string, dtype |S<n>, as
    ISIC's): h5py reads `f[id][()]` back as np.bytes_, a bytes subclass io.BytesIO takes directly. np.bytes_
    drops trailing NULs, harmless for PNG which ends in its IEND CRC. (np.void would read back as np.void,
    |V<n>, needing bytes(); plain bytes fails: h5py makes it a vlen string, which refuses embedded NULs.)
    Lesion crops vary in size on ISIC, so sides here vary from 14 to 20."""
    rng, root = np.random.default_rng(seed), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    labels, tests = _classes(rng, n_train, 2), _classes(rng, n_test, 2)
    train = [_colour(rng, k, *rng.integers(14, 21, 2)) for k in labels]
    test = [_colour(rng, k, *rng.integers(14, 21, 2)) for k in tests]
    ids = [f"ISIC_{v:07d}" for v in rng.choice(10**7, n_train + n_test, replace=False)]
    train_ids, test_ids = ids[:n_train], ids[n_train:]
    for split, split_ids, images in (("train", train_ids, train), ("test", test_ids, test)):
        with h5py.File(root / f"{split}-image.hdf5", "w") as f:
            for i, g in zip(split_ids, images):
                f.create_dataset(i, data=np.bytes_(_png(g)))
    pd.DataFrame({"isic_id": train_ids, "target": labels}).to_csv(root / "train-metadata.csv", index=False)
    pd.DataFrame({"isic_id": test_ids}).to_csv(root / "test-metadata.csv", index=False)
    pd.DataFrame({"isic_id": test_ids, "target": 0.5}).to_csv(root / "sample_submission.csv", index=False)
    return Expected({i: (str(k), g) for i, k, g in zip(train_ids, labels, train)}, dict(zip(test_ids, test)))


def numpy_arrays(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 0) -> Expected:
    """{train,test}_images.npy (N, H, W, 3) uint8 RGB; train.csv id (row index) and word labels."""
    rng, root = np.random.default_rng(seed), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = np.array(["cat", "dog", "frog"])
    labels, tests = _classes(rng, n_train), _classes(rng, n_test)
    train = np.stack([_colour(rng, k, 16, 16) for k in labels])
    test = np.stack([_colour(rng, k, 16, 16) for k in tests])
    np.save(root / "train_images.npy", train)
    np.save(root / "test_images.npy", test)
    pd.DataFrame({"id": range(n_train), "label": names[labels]}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": range(n_test), "label": names[0]}).to_csv(root / "sample_submission.csv", index=False)
    return Expected({i: (str(names[k]), train[i]) for i, k in enumerate(labels)}, dict(enumerate(test)))


def numpy_npz(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 0) -> Expected:
    """train.npz with x (N, H, W) uint8 grayscale and y int labels, test.npz with x; ids are row indices."""
    rng, root = np.random.default_rng(seed), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    labels, tests = _classes(rng, n_train), _classes(rng, n_test)
    train = np.stack([_gray(rng, k, 16, 16) for k in labels])
    test = np.stack([_gray(rng, k, 16, 16) for k in tests])
    np.savez(root / "train.npz", x=train, y=labels)
    np.savez(root / "test.npz", x=test)
    pd.DataFrame({"id": range(n_test), "label": 0}).to_csv(root / "sample_submission.csv", index=False)
    return Expected({i: (str(k), _rgb(train[i])) for i, k in enumerate(labels)},
                    {i: _rgb(g) for i, g in enumerate(test)})


def _ct(uid):
    """A CT image's header (file meta, ids, rescale to Hounsfield units, window) without pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = UID_ROOT + "1", UID_ROOT + "2"
    ds.Modality, ds.PatientID = "CT", "anon"
    ds.RescaleSlope, ds.RescaleIntercept = RESCALE
    ds.WindowCenter, ds.WindowWidth = WINDOW
    return ds


def _windowed(stored, monochrome1):
    (slope, intercept), (centre, width) = RESCALE, WINDOW
    value = stored * float(slope) + intercept
    out = np.rint(np.clip((value - (centre - width / 2)) / width * 255, 0, 255)).astype(np.uint8)
    return _rgb(255 - out if monochrome1 else out)


def _jpeg2000(ds, stored):
    """JPEG 2000 lossless encoded by Pillow: pydicom's encoder needs pylibjpeg-openjpeg, which
    Kaggle's image lacks (its decoders: Pillow's, make test-kaggle's)."""
    codestream = io.BytesIO()
    Image.fromarray(stored).save(codestream, "JPEG2000", irreversible=False, no_jp2=True)
    ds.PixelData = encapsulate([codestream.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless


def _jpeg_lossless(path):
    """The DICOM file at `path` re-encoded as JPEG Lossless (process 14, SV1) by GDCM, which Kaggle's image
    lacks: neither Pillow nor pydicom decodes it there."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    assert reader.Read() and (change.SetInput(reader.GetImage()) or change.Change())
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(path))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()


def _write_dicoms(folder, uids, labels, rng, jpeg_lossless=False):
    """One CT file per uid, cycling the variants a reader must handle: plain, MONOCHROME1, JPEG 2000 lossless,
    RLE lossless (or each JPEG Lossless). Returns the expected images."""
    folder.mkdir(parents=True)
    images = []
    for i, (uid, k) in enumerate(zip(uids, labels)):
        hounsfield = -100 + 200 * k + rng.normal(0, 60, CT_SHAPE)  # some values fall outside the window
        stored = (hounsfield - RESCALE[1]).clip(0, 4095).astype(np.uint16)
        ds, variant = _ct(uid), 0 if jpeg_lossless else i % 4
        ds.set_pixel_data(stored, "MONOCHROME1" if variant == 1 else "MONOCHROME2", 12,
                          generate_instance_uid=False)
        if variant == 2:
            _jpeg2000(ds, stored)
        elif variant == 3:
            ds.compress(RLELossless, generate_instance_uid=False)  # pydicom's own encoder
        ds.save_as(folder / f"{uid}.dcm", enforce_file_format=True)
        if jpeg_lossless:
            _jpeg_lossless(folder / f"{uid}.dcm")
        images.append(_windowed(stored, variant == 1))
    return images


def dicom(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 0, jpeg_lossless: bool = False) -> Expected:
    """RSNA-style: {train,test}_images/<id>.dcm, 12-bit CT in 16-bit words, binary labels in train.csv. Ids
    are SOP instance UIDs, dots and all, as in RSNA's cervical spine set. `jpeg_lossless`: every file in
    the syntax Kaggle's image cannot decode (made with GDCM)."""
    rng, root = np.random.default_rng(seed), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    labels, tests = _classes(rng, n_train, 2), _classes(rng, n_test, 2)
    train_ids = [f"{UID_ROOT}1{i:04d}" for i in range(n_train)]
    test_ids = [f"{UID_ROOT}2{i:04d}" for i in range(n_test)]
    train = _write_dicoms(root / "train_images", train_ids, labels, rng, jpeg_lossless)
    test = _write_dicoms(root / "test_images", test_ids, tests, rng, jpeg_lossless)
    pd.DataFrame({"image_id": train_ids, "label": labels}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_id": test_ids, "label": 0}).to_csv(root / "sample_submission.csv", index=False)
    return Expected({i: (str(k), g) for i, k, g in zip(train_ids, labels, train)}, dict(zip(test_ids, test)))


def dicom_without_pixels(path: Path) -> None:
    """A valid CT file with no PixelData: pydicom reads it, but ds.pixel_array raises AttributeError ("The
    dataset has no 'Pixel Data', 'Float Pixel Data' or 'Double Float Pixel Data' element, ...")."""
    _ct(UID_ROOT + "3").save_as(path, enforce_file_format=True)


def dicom_unknown_syntax(path: Path) -> None:
    """A CT file encapsulated as MPEG2 video (MPEG2MPML, 1.2.840.10008.1.2.4.100), a syntax pydicom knows but
    none of its decoders, pylibjpeg nor gdcm decodes: ds.pixel_array raises NotImplementedError ("Unable to
    decode the pixel data as a (0002,0010) 'Transfer Syntax UID' value of 'MPEG2 Main Profile / Main Level' is
    not supported"); gdcm.ImageReader reads the header but GetImage().GetBuffer() returns None. (JPEG XL,
    1.2.840.10008.1.2.4.110, is unknown to pydicom 3.0.2, whose save_as then refuses the file.)"""
    ds = _ct(UID_ROOT + "4")
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = *CT_SHAPE, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = encapsulate([bytes(32)])
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.save_as(path, enforce_file_format=True)


def rsna_long_format(root: Path, n_train: int = 24, n_test: int = 10, seed: int = 0) -> Expected:
    """RSNA intracranial hemorrhage: multilabel in long format, stage_2_train.csv ID=ID_<image>_<subtype>,
    Label, rows per image in Kaggle's order (subtypes, then "any"); grayscale PNGs stand in for the DICOMs.
    "any" is positive iff a subtype is, and each positive subtype brightens its own quadrant."""
    rng, root = np.random.default_rng(seed), Path(root)
    subtypes, classes = ["epidural", "subdural"], ["any", "epidural", "subdural"]
    ids = ["ID_" + i for i in _hex_ids(rng, n_train + n_test, 9, first="0123456789abcdef")]
    data = {}
    for split, split_ids in (("train", ids[:n_train]), ("test", ids[n_train:])):
        (root / split).mkdir(parents=True)
        for i in split_ids:
            flags = rng.integers(0, 2, len(subtypes))
            gray = (80 + rng.normal(0, 20, (16, 16))).clip(0, 255)
            gray[:8, :8] += 120 * flags[0]
            gray[8:, 8:] += 120 * flags[1]
            gray = gray.clip(0, 255).astype(np.uint8)
            Image.fromarray(gray).save(root / split / f"{i}.png")
            data[i] = ({"epidural": flags[0], "subdural": flags[1], "any": flags.max()}, _rgb(gray))
    order = [*subtypes, "any"]
    rows = [(f"{i}_{c}", data[i][0][c]) for i in ids[:n_train] for c in order]
    pd.DataFrame(rows, columns=["ID", "Label"]).to_csv(root / "stage_2_train.csv", index=False)
    sample = pd.DataFrame({"ID": [f"{i}_{c}" for i in ids[n_train:] for c in order], "Label": 0.5})
    sample.to_csv(root / "stage_2_sample_submission.csv", index=False)
    return Expected({i: ([c for c in classes if data[i][0][c]], data[i][1]) for i in ids[:n_train]},
                    {i: data[i][1] for i in ids[n_train:]})
