import json

import numpy as np
import pandas as pd
import pytest

from kit import KitError
from kit.config import load_spec
from kit.sample_format import submission_format
from kit.submission import check, frame, problems, write
from tests.helpers import spec_file, write_competition


def _spec(tmp_path, **keys):
    return load_spec(str(spec_file(tmp_path, **keys)))


def _sample(ids, **columns):
    return pd.DataFrame({"id": ids, **columns})


@pytest.mark.parametrize("task, metric, columns, expected", [
    ("multiclass", "log_loss", {"a": 0.5, "b": 0.5}, "per_class"),
    ("binary", "log_loss", {"label": 0.5}, "probability"),
    ("binary", "roc_auc", {"target": 0}, "probability"),
    ("binary", "accuracy", {"label": 0}, "label"),
    ("multiclass", "qwk", {"diagnosis": 0}, "label"),
    ("multilabel", "f2", {"tags": ""}, "labels"),
    ("multilabel", "log_loss", {"a": 0, "b": 0}, "per_class"),
])
def test_format_is_read_off_the_sample_submission(tmp_path, task, metric, columns, expected):
    spec = _spec(tmp_path, task=task, metric=metric)
    assert submission_format(spec, _sample(["x"], **columns), ["a", "b"]) == expected


def test_formats_that_cannot_fit_are_errors(tmp_path):
    with pytest.raises(KitError, match="the sample submission has only its id column \\(id\\): no value column"):
        submission_format(_spec(tmp_path), _sample(["x"]), ["a", "b"])
    with pytest.raises(KitError, match="submission per_class: the sample submission's columns \\('p'\\) are not"):
        submission_format(_spec(tmp_path, submission="per_class"), _sample(["x"], p=0), ["a", "b"])
    with pytest.raises(KitError, match="submission probability does not fit a multiclass task"):
        submission_format(_spec(tmp_path, submission="probability"), _sample(["x"], p=0), ["a", "b"])


def test_per_class_probabilities_follow_the_samples_columns_and_id_order(tmp_path):
    spec = _spec(tmp_path, metric="log_loss", clip=0.01)
    sample = _sample(["t2", "t1", "t3"], c=0.0, a=0.0, b=0.0)
    p = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])  # for t1, t2, t3
    out = frame(spec, sample, ["a", "b", "c"], ["t1", "t2", "t3"], p)
    assert out.columns.tolist() == ["id", "c", "a", "b"] and out["id"].tolist() == ["t2", "t1", "t3"]
    np.testing.assert_allclose(out.iloc[0, 1:].to_numpy(float), [0.5, 0.2, 0.3])
    assert out.iloc[1, 1:].min() > 0 and out.iloc[1, 1:].sum() == pytest.approx(1)  # clipped, renormalised


def test_labels_probabilities_and_multilabel_strings(tmp_path):
    ids = ["1", "2", "3"]
    binary = _spec(tmp_path, task="binary", metric="log_loss", clip=0.005)
    out = frame(binary, _sample(ids, label=0.5), ["cat", "dog"], ids, np.array([0.0, 0.7, 1.0]))
    assert out["label"].tolist() == [0.005, 0.7, 0.995]
    labels = _spec(tmp_path, task="binary", metric="accuracy")
    assert frame(labels, _sample(ids, label=0), ["0", "1"], ids, np.array([0.2, 0.7, 0.5]))["label"].tolist() == \
        ["0", "1", "1"]
    multi = _spec(tmp_path, task="multiclass", metric="qwk")
    assert frame(multi, _sample(ids, y=0), ["0", "1", "2"], ids, np.eye(3)[[2, 0, 1]])["y"].tolist() == ["2", "0", "1"]
    tags = _spec(tmp_path, task="multilabel", metric="f2", threshold=0.4)
    p = np.array([[0.9, 0.5, 0.1], [0.1, 0.2, 0.3], [0.45, 0.0, 0.99]])
    assert frame(tags, _sample(ids, tags=""), ["a", "b", "c"], ids, p)["tags"].tolist() == ["a b", "", "a c"]


def test_ids_that_do_not_match_the_test_images_are_an_error(tmp_path):
    with pytest.raises(KitError, match="do not match the test images: 1 ids have no prediction \\(e.g. t9\\), "
                                       "1 predictions are not in it \\(e.g. t2\\)"):
        frame(_spec(tmp_path), _sample(["t1", "t9"], a=0, b=0), ["a", "b"], ["t1", "t2"], np.ones((2, 2)) / 2)


def test_written_submissions_are_named_by_time_and_method_and_never_overwritten(tmp_path):
    spec = _spec(tmp_path)
    sample = _sample(["t1", "t2"], a=0.5, b=0.5)
    args = (spec, frame(spec, sample, ["a", "b"], ["t1", "t2"], np.array([[0.2, 0.8], [0.6, 0.4]])), "mean", {"cv": 0.5})
    first, second = write(*args, folder=tmp_path / "subs"), write(*args, folder=tmp_path / "subs")
    assert first != second and first.name.startswith("tiny-") and first.name.endswith("-mean.csv")
    assert first.read_text() == "id,a,b\nt1,0,1\nt2,1,0\n"  # accuracy scores decisions: one-hot
    assert json.loads(first.with_suffix(".json").read_text()) == {"cv": 0.5}
    assert sorted(p.name for p in (tmp_path / "subs").iterdir() if p.name.startswith(".")) == []


def test_per_class_columns_hold_what_the_metric_scores_post_processed_as_the_cv_was(tmp_path):
    p = np.array([[0.2, 0.8, 0.4], [0.6, 0.4, 0.05]])
    sample = _sample(["t1", "t2"], a=0, b=0, c=0)
    soft = frame(_spec(tmp_path, task="multilabel", metric="log_loss", clip=0.01), sample, ["a", "b", "c"],
                 ["t1", "t2"], p)
    np.testing.assert_allclose(soft[["a", "b", "c"]], [[0.2, 0.8, 0.4], [0.6, 0.4, 0.05]])
    spec = _spec(tmp_path, task="multilabel", metric="f2", threshold=0.5)
    assert frame(spec, sample, ["a", "b", "c"], ["t1", "t2"], p)[["a", "b", "c"]].to_numpy().tolist() == [
        [0, 1, 0], [1, 0, 0]]  # the spec's threshold
    fitted = frame(spec, sample, ["a", "b", "c"], ["t1", "t2"], p, {"thresholds": [0.7, 0.9, 0.3]})
    assert fitted[["a", "b", "c"]].to_numpy().tolist() == [[0, 0, 1], [0, 0, 0]]  # the fitted thresholds


def test_every_problem_of_a_csv_is_listed_on_its_own_line(tmp_path):
    spec = _spec(tmp_path, metric="log_loss")
    sample = _sample(["t1", "t2", "t3"], a=0.5, b=0.5)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,b,c\nt1,0.5,1\nt1,nan,1\nt4,inf,1\nt5,1.5,1\n")
    found = problems(bad, sample, spec, ["a", "b"])
    assert found == [
        "column 'a' is missing", "column 'c' is not in the sample", "4 rows; the sample submission has 3",
        "1 duplicated ids, e.g. 't1'", "2 ids of the sample are missing, e.g. 't2'",
        "2 ids are not in the sample, e.g. 't4'",
        "column 'b': 1 values are not numbers (empty, NaN or text), e.g. row 3",
        "column 'b': 1 values are infinite", "column 'b': 1 probabilities are outside [0, 1]"]
    order = tmp_path / "order.csv"
    order.write_text("id,b,a\nt2,0.5,0.5\nt1,0.5,0.5\nt3,0.5,0.5\n")
    assert problems(order, sample, spec, ["a", "b"]) == [
        "columns are in another order than the sample's: id, a, b",
        "ids are in another order than the sample's (first at row 2)"]
    good = tmp_path / "good.csv"
    good.write_text("id,a,b\nt1,0.1,0.9\nt2,0.5,0.5\nt3,1,0\n")
    assert problems(good, sample, spec, ["a", "b"]) == []


def test_label_values_must_be_classes(tmp_path):
    spec = _spec(tmp_path, metric="accuracy")
    sample = _sample(["t1", "t2"], label="a")
    path = tmp_path / "s.csv"
    path.write_text("id,label\nt1,a\nt2,z\n")
    assert problems(path, sample, spec, ["a", "b"]) == ["column 'label': 1 values are not class labels, e.g. 'z'"]
    tags = _spec(tmp_path, task="multilabel", metric="f2")
    path.write_text("id,label\nt1,a b\nt2,b q\n")
    assert problems(path, sample, tags, ["a", "b"]) == ["column 'label': 1 labels are not classes, e.g. 'q'"]


def test_check_needs_the_csv_the_sample_and_the_labels_only(tmp_path, capsys):
    import shutil

    write_competition(tmp_path / "data")
    spec = _spec(tmp_path)
    shutil.rmtree(tmp_path / "data" / "train")  # no image is read to check a submission
    shutil.rmtree(tmp_path / "data" / "test")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,a\nte000,0.5\n")
    with pytest.raises(KitError) as e:
        check(bad, spec)
    lines = str(e.value).splitlines()
    assert lines[0].endswith("bad.csv is not a valid submission (3 problems):") and len(lines) == 4
    good = tmp_path / "good.csv"
    good.write_text("id,a,b\n" + "".join(f"te{i:03d},0.5,0.5\n" for i in range(8)))
    check(good, spec)
    assert "good.csv: valid (8 rows, columns id, a, b)" in capsys.readouterr().out


def test_probabilities_are_written_to_8_significant_digits_and_still_validate(tmp_path):
    write_competition(tmp_path / "data")
    spec = _spec(tmp_path, metric="log_loss")
    sample = pd.read_csv(tmp_path / "data" / "sample_submission.csv", dtype=str)
    p = np.full((8, 2), 0.5)
    p[:, 0], p[:, 1] = 0.8865933500000001, 1 - 0.8865933500000001
    path = write(spec, frame(spec, sample, ["a", "b"], sample["id"].tolist(), p), "mean", {}, folder=tmp_path / "subs")
    assert path.read_text().splitlines()[1] == "te000,0.88659335,0.11340665"
    check(path, spec)
