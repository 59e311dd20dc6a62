"""Kaggle image-competition kit: pretrained Keras backbones, one fine-tuning schedule, k folds."""
import os

# Quiet TF's C++ start-up chatter and albumentations' online version check (kernels run offline).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


class KitError(Exception):
    """A user's mistake or a broken input: printed as one line, exit code 2, no traceback."""


def quoted(names, most=None):
    """Names (classes, columns) as a message lists them: each quoted, so that a class named "a, b"
    stays one; the first `most` of them, then "..."."""
    names = [str(n) for n in names]
    shown = names if most is None else names[:most]
    return ", ".join(map(repr, shown)) + (", ..." if len(shown) < len(names) else "")
