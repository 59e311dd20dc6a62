"""Images kept as records in containers rather than one file each: rows of pixel values in a CSV
(Digit Recognizer, Kannada-MNIST; or one cell of space-separated values, the facial expression
challenge) or in parquet (Bengali.AI), TFRecord examples of encoded images (Flowers on TPUs), HDF5
entries keyed by id (ISIC 2024), NumPy arrays (.npy, .npz).

An image is named `<container>::<record>`, its row in that container (from 0) or its HDF5 key,
so the tables, the image cache and skipped.csv treat it as they treat a file's path. Readers open
a container once per process and read one record at a time (a parquet file a batch of rows), so
no container is ever loaded whole unless it is a compressed .npz. pyarrow, h5py and TensorFlow's
example parser are imported only when a competition stores images that way.
"""
import csv
import fnmatch
import math
import mmap
import os
import threading
from pathlib import Path

import numpy as np

from kit import KitError, quoted
from kit.decode import DICOM_EXTS, BadImage, as_rgb8, pixels_rgb, read_rgb, resized

SEP = "::"
MISSING = "no image for id "  # the record part of an id's name when no container holds it
FORMS = {"pixels": (".csv",), "parquet": (".parquet",), "tfrecord": (".tfrec", ".tfrecord", ".tfrecords"),
         "hdf5": (".h5", ".hdf5"), "numpy": (".npy", ".npz")}
FORM_OF = {ext: form for form, exts in FORMS.items() for ext in exts}


def pixel_columns(pattern, columns):
    """The columns holding pixel values, in the file's order (row by row, as every pixel table
    is written): those matching the glob `pattern`, or the one column named `pattern` (all values
    in one cell). Names are matched without surrounding spaces (FER2013's " pixels")."""
    return [c for c in columns if fnmatch.fnmatchcase(str(c).strip(), pattern.strip())]


class Reader:
    """Reads an image by its name (a file's path or a record's) as (size, size, 3) uint8 RGB."""

    def __init__(self, pixels="pixel*", shape=(), image="image", window=(), id_column=""):
        self.settings = dict(pixels=pixels, shape=list(shape), image=image, window=list(window))
        self.id_column = id_column  # names a broken record; kept out of settings, the image cache's key
        self._open, self._lock = {}, threading.Lock()

    def read(self, name, size=None):
        container, sep, key = str(name).rpartition(SEP)
        form = FORM_OF.get(Path(container).suffix.lower()) if sep else None
        if form is None and str(name).lower().endswith(DICOM_EXTS):
            from kit.dicom import read_dicom  # pydicom only when a competition has DICOM files
            return resized(read_dicom(name, self.settings["window"] or None), size)
        if form is None:
            return read_rgb(name, size)
        if key.startswith(MISSING):
            raise BadImage(name, f"no record in the {form} files has this id")
        opened = self._open.get(container)
        if opened is None:  # the lock only while a container opens: reads run in parallel
            with self._lock:
                if container not in self._open:
                    if not Path(container).is_file():
                        raise BadImage(name, "the file is missing")
                    self._open[container] = OPENERS[form](container, {**self.settings, "id": self.id_column})
                opened = self._open[container]
        return opened.read(name, key, size)


def reader(spec):
    return Reader(spec.pixels, spec.image_shape, spec.record_image, spec.dicom_window, spec.id_column)


def shape_of(count, shape, where):
    """An image's (H, W[, C]) from its number of pixel values: the spec's, or a square gray one."""
    if shape:
        return tuple(shape)
    side = math.isqrt(count)
    if side * side != count:
        raise KitError(f"{where}: {count} pixel values are not a square image: "
                       f"set image_shape: [height, width]")
    return side, side


def check_shape(path, count, shape):
    """The spec's image_shape against a table's pixel columns: once, before any image is read."""
    if shape and count != math.prod(shape):
        raise KitError(f"{path}: {count} pixel columns; image_shape {'x'.join(map(str, shape))} needs "
                       f"{math.prod(shape)}")
    shape_of(count, shape, path)


class _CsvRows:
    """A CSV with one image per row: line offsets found once, a row read by seeking to its line."""

    def __init__(self, path, settings):
        self.path, self.shape = path, settings["shape"]
        with open(path, "rb") as f:
            self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        ends = np.flatnonzero(np.frombuffer(self.data, np.uint8) == ord("\n"))
        starts = np.concatenate([[0], ends + 1])
        ends = np.concatenate([ends, [len(self.data)]])
        keep = ends - starts > 1  # blank lines are no rows, as pandas reads it
        self.starts, self.ends = starts[keep], ends[keep]
        header = next(csv.reader([self._line(0).removeprefix("\ufeff")]))  # a BOM, as pandas drops it
        columns = pixel_columns(settings["pixels"], header)
        self.cell = len(columns) == 1 and columns[0].strip() == settings["pixels"].strip()
        self.positions, self.width = [header.index(c) for c in columns], len(header)
        if not columns:
            raise KitError(f"{path}: no column matches pixels {settings['pixels']!r} (columns: "
                           f"{quoted(header, 8)})")
        if not self.cell:
            check_shape(path, len(columns), self.shape)

    def _line(self, k):
        return self.data[self.starts[k]:self.ends[k]].decode().rstrip("\r")

    def read(self, name, key, size):
        row = int(key) + 1  # the header is line 0
        if row >= len(self.starts):
            raise BadImage(name, "no such row")
        cells = next(csv.reader([self._line(row)]))
        where = f"line {row + 1}"
        try:
            picked = [cells[i] for i in self.positions]
            picked = picked[0].split() if self.cell else picked
            values = np.array(picked, np.float64)
        except IndexError:
            raise BadImage(name, f"{where}: {len(cells)} cells; the header has {self.width}") from None
        except ValueError:
            bad = next(v for v in picked if not _number(v))
            raise BadImage(name, f"{where}: " + (f"pixel value {bad!r} is not a number" if bad.strip()
                                                 else "a pixel value is empty")) from None
        try:
            return pixels_rgb(name, values, shape_of(values.size, self.shape, name), size)
        except KitError as e:
            raise BadImage(name, f"{where}: {e}") from None
        except BadImage as e:
            raise BadImage(name, f"{where}: {e.reason}") from None


def _number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


class _Parquet:
    """A parquet file read as a stream of batches of about 32 MB: the few most recent are kept,
    so the cache's filling pass (rows in order, a few threads) reads the file once. (Reading
    rows out of order restarts the stream: parquet images must be cached, kit/checks.py.)"""

    def __init__(self, path, settings):
        import pyarrow.parquet as pq
        self.file = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        names = self.file.schema_arrow.names
        self.columns = pixel_columns(settings["pixels"], names)
        self.encoded = not self.columns and settings["image"] in names
        if self.encoded:
            self.columns = [settings["image"]]
        elif not self.columns:
            raise KitError(f"{path}: no column matches pixels {settings['pixels']!r} and none is named "
                           f"{settings['image']!r} (encoded images)")
        self.shape = settings["shape"]
        if not self.encoded:
            check_shape(path, len(self.columns), self.shape)
        self.batch = 256 if self.encoded else max(64, (32 << 20) // len(self.columns))
        self.batches, self.stream, self.lock = {}, None, threading.Lock()
        self.id_column = settings["id"] if settings["id"] in names else None
        self.ids = None  # the id column, read on the first broken row

    def _batch(self, start):
        with self.lock:
            if start not in self.batches:
                if self.stream is None or self.stream[0] > start:
                    self.stream = [0, self.file.iter_batches(self.batch, columns=self.columns)]
                while self.stream[0] <= start:
                    table = next(self.stream[1])
                    rows = (table.column(0).to_pylist() if self.encoded else
                            np.column_stack([c.to_numpy(zero_copy_only=False) for c in table.columns]))
                    self.batches[self.stream[0]] = rows
                    self.stream[0] += len(rows)
                    while len(self.batches) > 3:  # the oldest read goes first
                        del self.batches[next(iter(self.batches))]
            return self.batches[start]

    def read(self, name, key, size):
        row = int(key)
        if not 0 <= row < self.file.metadata.num_rows:
            raise BadImage(name, "no such row")
        try:
            return self._image(name, self._batch(row - row % self.batch)[row % self.batch], size)
        except BadImage as e:  # a broken image is looked up by its id, not its row
            raise BadImage(name, f"{self._id(row)}{e.reason}") from None

    def _image(self, name, values, size):
        if self.encoded:
            data = values.get("bytes") if isinstance(values, dict) else values  # Hugging Face: {bytes, path}
            if not isinstance(data, bytes):
                raise BadImage(name, f"column {self.columns[0]!r} holds {type(values).__name__}, not image "
                                     f"bytes")
            return read_rgb(name, size, data=data)
        return pixels_rgb(name, values, shape_of(values.size, self.shape, name), size)

    def _id(self, row):
        if self.id_column is None:
            return ""
        with self.lock:
            if self.ids is None:
                self.ids = self.file.read(columns=[self.id_column]).column(0).to_pylist()
        return f"{self.id_column} {str(self.ids[row])!r}: "


class _TFRecord:
    """A TFRecord file: record offsets found once from the length headers, a record read by
    seeking to it and parsed as a tf.train.Example."""

    def __init__(self, path, settings):
        self.path, self.image = path, settings["image"]
        self.offsets = [offset for offset, _ in tfrecord_spans(path)]

    def read(self, name, key, size):
        row = int(key)
        if not 0 <= row < len(self.offsets):
            raise BadImage(name, "no such record")
        with open(self.path, "rb") as f:
            f.seek(self.offsets[row])
            length = int.from_bytes(f.read(8), "little")
            f.seek(4, 1)
            fields = example_fields(name, f.read(length))
        if self.image not in fields:
            raise BadImage(name, f"the record has no feature {self.image!r} (features: {', '.join(fields)})")
        return read_rgb(name, size, data=fields[self.image])


def tfrecord_spans(path):
    """(offset, length) of each record: 8 bytes of length, 4 of its CRC, the data, 4 of CRC.
    (The CRCs are not checked: a flipped bit in an image is the decoder's to find.)"""
    spans, size = [], Path(path).stat().st_size
    with open(path, "rb") as f:
        if f.read(2) == b"\x1f\x8b":
            raise KitError(f"{path}: a GZIP-compressed TFRecord file: decompress it (gunzip) first")
        f.seek(0)
        while header := f.read(12):
            length = int.from_bytes(header[:8], "little")
            if len(header) < 12 or f.tell() + length + 4 > size:
                raise KitError(f"{path}: not a TFRecord file, or a truncated one (record {len(spans)} "
                               f"at byte {f.tell() - len(header)})")
            spans.append((f.tell() - 12, length))
            f.seek(length + 4, 1)
    return spans


def example_fields(name, data):
    """A serialized tf.train.Example as {feature: its first value} (bytes, int or float)."""
    from tensorflow.core.example.example_pb2 import Example
    try:
        example = Example.FromString(data)
    except Exception as e:  # protobuf's DecodeError
        raise BadImage(name, f"not a tf.train.Example ({e})") from None
    fields = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = getattr(feature, kind).value if kind else []
        fields[key] = values[0] if len(values) else None
    return fields


class _Hdf5:
    """An HDF5 file of entries keyed by id: encoded image bytes (ISIC 2024) or a pixel array.

    h5py runs one call at a time in a process (its lock, and HDF5's), so it is asked only where an
    entry's bytes lie; they are read by os.pread and decoded outside any lock: records read in
    parallel, as files do. Entries stored otherwise (chunked, compressed, variable-length) are
    read by h5py."""

    def __init__(self, path, settings):
        import h5py
        self.h5py, self.file = h5py, h5py.File(path, "r")
        self.raw = open(path, "rb")  # a file object, not a bare fd: closed when the reader goes

    def read(self, name, key, size):
        value = self._value(name, key)
        if value.dtype.kind in "SV" or value.ndim == 1 and value.dtype.kind in "iu":
            return read_rgb(name, size, data=value.tobytes())
        if value.dtype.kind not in "iuf" or value.ndim not in (2, 3):
            raise BadImage(name, f"the entry holds {value.dtype} of shape {value.shape}, neither an encoded "
                                 f"image nor one image's pixels")
        return resized(array_rgb(name, value), size)

    def _value(self, name, key):
        try:
            entry = self.h5py.h5d.open(self.file.id, key.encode())
        except KeyError:  # missing, or a group
            raise BadImage(name, "no such entry") from None
        dtype, shape = entry.dtype, entry.shape
        nbytes, offset = dtype.itemsize * math.prod(shape), entry.get_offset()
        plain = dtype.kind in "SViuf" and not (dtype.fields or dtype.subdtype)  # stored as numpy lays it out
        if offset is None or entry.get_storage_size() != nbytes or not plain:
            return np.asarray(self.h5py.Dataset(entry)[()])
        data = os.pread(self.raw.fileno(), nbytes, offset)
        if len(data) < nbytes:
            raise BadImage(name, "the file is truncated")
        return np.frombuffer(data, dtype).reshape(shape)


class _Numpy:
    """A .npy array of images (memory-mapped), or an .npz's arrays (each loaded whole on first
    use: a zip cannot be mapped); a record is `<row>` of a .npy, `<array>/<row>` of an .npz."""

    def __init__(self, path, settings):
        self.path, self.shape, self.arrays, self.lock = path, settings["shape"], {}, threading.Lock()

    def _array(self, name):
        with self.lock:  # threads asking at once load an .npz array once
            if name not in self.arrays and self.path.endswith(".npz"):
                with np.load(self.path) as archive:
                    self.arrays[name] = archive[name]
            elif name not in self.arrays:
                self.arrays[name] = np.load(self.path, mmap_mode="r")
            return self.arrays[name]

    def read(self, name, key, size):
        array_name, _, row = key.rpartition("/")
        array, row = self._array(array_name), int(row)
        if not 0 <= row < len(array):
            raise BadImage(name, "no such row")
        image = np.asarray(array[row])
        if image.ndim == 1:  # flattened rows
            image = image.reshape(shape_of(image.size, self.shape, name))
        return resized(array_rgb(name, image), size)


def array_rgb(name, a):
    """An image array as stored (channels first or last; 8-bit values in any integer type, 16-bit,
    float in [0, 1] or 0-255) to 8-bit RGB."""
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels first (PyTorch's layout)
    if a.dtype.kind in "iu" and a.dtype.itemsize != 2 and a.dtype != np.uint8:  # int64 of 0-255 values
        low, high = int(a.min(initial=0)), int(a.max(initial=0))
        if low < 0 or high > 255:
            raise BadImage(name, f"pixel value {high if high > 255 else low} is outside 0-255 "
                                 f"(a {a.dtype} array; 16-bit images are uint16)")
        a = a.astype(np.uint8)
    return as_rgb8(a)


OPENERS = {"pixels": _CsvRows, "parquet": _Parquet, "tfrecord": _TFRecord, "hdf5": _Hdf5, "numpy": _Numpy}
