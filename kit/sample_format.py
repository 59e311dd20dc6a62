"""The sample submission's format, read off it, and whether it takes the classes the labels give.

Formats (spec key `submission`, `auto` reads them off the sample submission):
    probability  one column, P(positive class)                       binary, soft metric
    label        one column, the class label (as the labels are)     binary/multiclass, hard metric
    per_class    one probability column per class                    columns named after the classes
    labels       one column, the labels above `threshold`, space-separated    multilabel
    long         one row per image and class (`<image>_<class>`), its probability (or 0/1 for a
                 hard metric)                                        RSNA intracranial hemorrhage
"""
from kit import KitError, quoted
from kit.files import read_csv
from kit.layouts import split_long
from kit.metrics import METRICS


def submission_format(spec, sample, classes):
    values = [str(c) for c in sample.columns[1:]]
    if spec.submission != "auto":
        fmt = spec.submission
    elif len(values) == 1 and split_long(sample.iloc[:, 0], classes) is not None:
        fmt = "long"
    elif len(values) > 1:
        fmt = "per_class"
    elif spec.task == "multilabel":
        fmt = "labels"
    elif spec.task == "binary" and not METRICS[spec.metric].hard:
        fmt = "probability"
    else:
        fmt = "label"
    if fmt == "per_class" and sorted(values) != sorted(classes):
        unseen = sorted(set(values) - set(classes))
        raise KitError(f"submission per_class: the sample submission's columns ({quoted(values)}) "
                       f"are not the classes ({quoted(classes)})"
                       f"{f'; no training image is labelled {unseen[0]!r}' if unseen else ''}")
    if not values:
        raise KitError(f"the sample submission has only its id column ({sample.columns[0]}): no value column")
    if fmt != "per_class" and len(values) != 1:
        raise KitError(f"submission {fmt} writes one value column; the sample submission has "
                       f"{len(values)}: {', '.join(values)}")
    if fmt == "long" and split_long(sample.iloc[:, 0], classes) is None:
        raise KitError(f"submission long: the sample submission's ids are not <image>_<class> with one row "
                       f"per image and class ({quoted(classes, 6)})")
    fits = {"probability": ("binary",), "labels": ("multilabel",), "label": ("binary", "multiclass")}
    if spec.task not in fits.get(fmt, (spec.task,)):
        raise KitError(f"submission {fmt} does not fit a {spec.task} task")
    return fmt


def check_sample(spec, classes):
    """The sample submission takes the classes the labels give: said before training, not after."""
    path = spec.data_path / spec.sample_submission
    if path.is_file():
        submission_format(spec, read_csv(path, "sample submission"), classes)
