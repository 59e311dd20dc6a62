"""DICOM files (the RSNA and SIIM competitions) to 8-bit RGB: stored values through the modality
LUT (rescale slope and intercept: Hounsfield units for CT), then a window, MONOCHROME1 inverted.

The window is the spec's `dicom_window` [center, width] when set (the same for every image, as a
radiologist reads a series), else the file's window (its first) or VOI LUT, else the image's own range.
Compressed transfer syntaxes are decoded by the plugins pydicom finds (pylibjpeg-openjpeg:
JPEG 2000; python-gdcm: JPEG lossless and JPEG-LS; pydicom itself: RLE). pydicom is imported
only when a competition has DICOM files.
"""
import numpy as np

from kit.decode import BadImage, as_rgb8

# The decoders of Kaggle's image: pydicom's own (RLE) and Pillow's (JPEG baseline and extended,
# JPEG 2000). Its other compressed syntaxes need the wheels dataset (kit/runtime.py).
IMAGE_PLUGINS = ("pydicom", "pillow")


def beyond_image(paths, sample=64):
    """The transfer syntaxes of `paths` (a sample spread over them: headers only) that none of
    the decoders in Kaggle's image reads."""
    import pydicom
    from pydicom.pixels.decoders.base import get_decoder

    lacking = set()
    for path in paths[::max(1, len(paths) // sample)]:
        try:
            syntax = pydicom.dcmread(path, stop_before_pixels=True, force=True).file_meta.TransferSyntaxUID
            decoder = get_decoder(syntax)
        except Exception:  # unreadable, no file meta, no decoder anywhere: decoding says so, per image
            continue
        plugins = {*decoder.available_plugins, *(m.split(" - ")[0] for m in decoder.missing_dependencies)}
        if decoder.is_encapsulated and not plugins & set(IMAGE_PLUGINS):
            lacking.add(syntax.name)
    return sorted(lacking)


def read_dicom(path, window=None):
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    try:
        ds = pydicom.dcmread(path, force=True)  # files without the 128-byte preamble too
    except FileNotFoundError:
        raise BadImage(path, "the file is missing") from None
    except Exception as e:  # pydicom raises InvalidDicomError, OSError, ValueError, ...
        raise BadImage(path, f"not a DICOM file ({e})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise BadImage(path, "the DICOM file has no pixel data")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None:  # a bare dataset (no file meta): the encoding it was read in
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        ds.file_meta = meta if meta is not None else pydicom.dataset.FileMetaDataset()
        syntax = ImplicitVRLittleEndian if ds.original_encoding[0] else ExplicitVRLittleEndian
        ds.file_meta.TransferSyntaxUID = syntax
    try:
        pixels = ds.pixel_array
    except Exception as e:  # no plugin: NotImplementedError, RuntimeError; broken data: ValueError, ...
        name = f"{syntax.name} ({syntax})"
        text = str(e).strip() or type(e).__name__
        if isinstance(e, NotImplementedError) or "plugin" in text or "not supported" in text:
            why = f"transfer syntax {name}: no installed decoder reads it{_would(syntax)}"
            raise BadImage(path, why) from None
        raise BadImage(path, f"its pixel data cannot be decoded ({text.splitlines()[0][:160]})") from None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[len(pixels) // 2]  # a multi-frame file: its middle frame
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if not photometric.startswith("MONOCHROME"):
        return as_rgb8(pixels)  # RGB (pydicom converts YBR to RGB)
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if window:
        gray = _windowed(values, *window)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        gray = _windowed(values, _first(ds.WindowCenter), _first(ds.WindowWidth))
    elif "VOILUTSequence" in ds:
        gray = _stretched(apply_voi_lut(values, ds, index=0))
    else:
        gray = _stretched(values)
    if photometric == "MONOCHROME1":  # white is low: invert so that every image reads alike
        gray = 255 - gray
    return as_rgb8(gray)


def _would(syntax):
    """What would decode a syntax that no installed decoder reads, as pydicom names it."""
    from pydicom.pixels.decoders.base import get_decoder
    try:
        missing = get_decoder(syntax).missing_dependencies
    except NotImplementedError:  # pydicom has no decoder of it at all
        return ""
    needs = " or ".join(m.split(" - requires ")[-1] for m in missing)
    return f" ({needs} would; in a kernel, the wheels dataset: make wheels)" if needs else ""


def _first(value):
    """A window given more than once (several presets): the first."""
    try:
        return float(value)
    except TypeError:
        return float(value[0])


def _windowed(values, center, width):
    return np.rint(np.clip((values - (center - width / 2)) / width * 255, 0, 255)).astype(np.uint8)


def _stretched(values):
    low, high = float(values.min()), float(values.max())
    return _windowed(values, (low + high) / 2, max(high - low, 1e-6))
