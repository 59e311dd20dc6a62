"""Kaggle image-competition kit: pretrained Keras backbones, one fine-tuning schedule, k folds."""
import os

# Quiet TF's C++ start-up chatter and albumentations' online version check (kernels run offline).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


class KitError(Exception):
    """A user's mistake or a broken input: printed as one line, exit code 2, no traceback."""
