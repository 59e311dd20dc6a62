"""Image decoding: any image file to (H, W, 3) 8-bit RGB, whatever it holds (grayscale, RGBA,
palette, CMYK, 16-bit), upright as a viewer shows it (EXIF orientation), resized when asked; a
file that cannot be decoded raises BadImage, whose reason is listed (never printed)."""
import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
VERSION = 2  # of what read_rgb returns: caches of decoded images made by another are remade
# OpenCV's warnings on a broken file stay off the screen: the BadImage reason says it, in skipped.csv.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class BadImage(Exception):
    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def read_rgb(path, size=None):
    """Decode an image file to (H, W, 3) uint8 RGB, resized to size x size when given.

    Grayscale, RGBA, palette, CMYK and 16-bit images are converted; a truncated or corrupt file
    raises BadImage (Pillow refuses truncated JPEGs that OpenCV would silently half-decode).
    """
    try:
        with Image.open(path) as im:
            if size and im.format == "JPEG":
                im.draft("RGB", (size, size))  # decode at a reduced scale, never below `size`
            im.load()
            arr = _pil_rgb8(ImageOps.exif_transpose(im))  # a phone photo tagged "rotate 90", upright
    except FileNotFoundError:
        raise BadImage(path, "the file is missing") from None
    except UnidentifiedImageError:
        arr = _cv2_rgb8(path)  # a format Pillow does not know
    except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, ValueError, ...
        raise BadImage(path, str(e) or type(e).__name__) from None
    if size and arr.shape[:2] != (size, size):
        arr = cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA)
    return arr


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


def _cv2_rgb8(path):
    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise BadImage(path, "not an image file")
    if a.ndim == 2:
        return _gray8(a)
    if a.dtype != np.uint8:
        a = np.clip(a / 257 if np.issubdtype(a.dtype, np.integer) else a * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(a, cv2.COLOR_BGRA2RGB if a.shape[2] == 4 else cv2.COLOR_BGR2RGB)
