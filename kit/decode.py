"""Image decoding: any image file or encoded bytes, a DICOM file, or an array of pixel values to
(H, W, 3) 8-bit RGB, whatever it holds (grayscale, RGBA, palette, CMYK, 16-bit), upright as a
viewer shows it (EXIF orientation), resized when asked; what cannot be decoded raises BadImage,
whose reason is listed (never printed)."""
import io

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DICOM_EXTS = (".dcm", ".dicom")  # read by kit/dicom.py
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", *DICOM_EXTS)
VERSION = 2  # of what read_rgb returns: caches of decoded images made by another are remade
# OpenCV's warnings on a broken file stay off the screen: the BadImage reason says it, in skipped.csv.
# (OpenCV 4.12, on a notebook pinned to an older Kaggle image, has no cv2.utils.logging.)
if hasattr(getattr(cv2, "utils", None), "logging"):
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class BadImage(Exception):
    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def read_rgb(path, size=None, data=None):
    """Decode an image file (or its encoded bytes `data`; `path` then names it) to (H, W, 3) uint8
    RGB, resized to size x size when given (DICOM files are kit/dicom.py's).

    Grayscale, RGBA, palette, CMYK and 16-bit images are converted; a truncated or corrupt file
    raises BadImage (Pillow refuses truncated JPEGs that OpenCV would silently half-decode).
    """
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            if size and im.format == "JPEG":
                im.draft("RGB", (size, size))  # decode at a reduced scale, never below `size`
            im.load()
            arr = _pil_rgb8(ImageOps.exif_transpose(im))  # a phone photo tagged "rotate 90", upright
    except FileNotFoundError:
        raise BadImage(path, "the file is missing") from None
    except UnidentifiedImageError:
        arr = _cv2_rgb8(path, data)  # a format Pillow does not know
    except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, ValueError, ...
        raise BadImage(path, str(e) or type(e).__name__) from None
    return resized(arr, size)


def resized(arr, size):
    if size and arr.shape[:2] != (size, size):
        arr = cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA)
    return arr


def pixels_rgb(name, values, shape, size=None):
    """Pixel values (a table's row, an array's slice) of an image of `shape` ((H, W) or (H, W, C))
    to RGB. Values in a table are 8-bit: one outside 0-255 is a broken record, not a scale."""
    values = np.asarray(values)
    if values.size != int(np.prod(shape)):
        raise BadImage(name, f"{values.size} pixel values; an image of shape {'x'.join(map(str, shape))} "
                             f"has {int(np.prod(shape))}")
    if values.dtype.kind == "f" and np.isnan(values).any():
        raise BadImage(name, "a pixel value is missing")
    if values.dtype != np.uint8 and values.size:
        low, high = values.min(), values.max()
        if low < 0 or high > 255:
            raise BadImage(name, f"pixel value {high if high > 255 else low:g} is outside 0-255")
        fractional = values[values != np.round(values)]
        if fractional.size:
            raise BadImage(name, f"pixel value {fractional[0]:g} is not a whole number")
    return resized(as_rgb8(values.reshape(shape).astype(np.uint8)), size)


def as_rgb8(a):
    """An image array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of any depth to (H, W, 3) uint8."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2 or a.dtype != np.uint8:
        a = _gray8(a)
    return a[..., :3]


def _pil_rgb8(im):
    if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit integer or float grayscale
        return _gray8(np.asarray(im))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"))


def _gray8(a):
    """Scale a deep single-channel array to 8 bits by its type's range, the same for every image."""
    if np.issubdtype(a.dtype, np.floating):
        a = a * 255 if a.max(initial=0) <= 1 else a
    elif a.dtype != np.uint8:
        a = a / 257  # 16-bit range (Pillow opens 16-bit files as I;16 or as 32-bit I)
    a = np.clip(a, 0, 255).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a


def _cv2_rgb8(path, data=None):
    if data is not None and not len(data):
        raise BadImage(path, "the image bytes are empty")
    try:
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if data is None else \
            cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise BadImage(path, f"not an image ({str(e).strip().splitlines()[-1][:100]})") from None
    if a is None:
        raise BadImage(path, "not an image file")
    if a.ndim == 2:
        return _gray8(a)
    if a.dtype != np.uint8:
        a = np.clip(a / 257 if np.issubdtype(a.dtype, np.integer) else a * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(a, cv2.COLOR_BGRA2RGB if a.shape[2] == 4 else cv2.COLOR_BGR2RGB)
