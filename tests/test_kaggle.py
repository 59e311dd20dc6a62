"""The real `kaggle` client against a stand-in server on 127.0.0.1 (tests/kaggle_server.py)."""
import io
import zipfile

import pytest

from kit import KitError
from kit.kaggle.client import download, submit


def test_submit_sends_the_file_through_the_three_step_upload(kaggle_server, tmp_path):
    csv = tmp_path / "sub.csv"
    csv.write_bytes(b"id,label\n1,0.25\n2,0.75\n")
    message, ref = submit("dogs-vs-cats-redux-kernels-edition", csv, "3 backbones x 5 folds")
    assert message == "Successfully submitted to the competition" and ref == 4242
    methods = kaggle_server.methods()
    assert methods[:3] == ["StartSubmissionUpload", "PUT /upload/1", "CreateSubmission"]
    start = kaggle_server.calls[0][1]
    assert start["competitionName"] == "dogs-vs-cats-redux-kernels-edition"
    assert start["contentLength"] == csv.stat().st_size and start["fileName"] == "sub.csv"
    assert kaggle_server.uploads["/upload/1"] == csv.read_bytes()
    create = kaggle_server.calls[2][1]
    assert create["blobFileTokens"] == "blob-token-1" and create["submissionDescription"] == "3 backbones x 5 folds"


def test_an_upload_that_does_not_complete_is_one_line_and_nothing_is_submitted(kaggle_server, tmp_path):
    """The client's own answer for it differs between releases (kaggle 2.0.2 on Kaggle's image)."""
    kaggle_server.put_status = 400
    csv = tmp_path / "sub.csv"
    csv.write_text("id,label\n1,0.5\n")
    with pytest.raises(KitError, match=r"the upload of .*sub.csv to Kaggle did not complete; the file is kept: try again"):
        submit("dogs-vs-cats-redux-kernels-edition", csv, "m")
    assert "CreateSubmission" not in kaggle_server.methods() and csv.read_text() == "id,label\n1,0.5\n"


@pytest.mark.parametrize("status, body, expected", [
    (403, {"code": 403, "message": "You cannot submit until you accept the competition rules"},
     "Kaggle refused the submission: You cannot submit until you accept the competition rules"),
    (404, {}, "Kaggle refused the submission: 404 Client Error: Not Found (check the competition or kernel name)"),
    (500, {}, "Kaggle refused the submission: 500 Server Error"),
])
def test_a_refusal_is_one_clear_line_and_the_file_is_kept(kaggle_server, tmp_path, status, body, expected):
    kaggle_server.replies["StartSubmissionUpload"] = (status, body, {})
    csv = tmp_path / "sub.csv"
    csv.write_text("id,label\n1,0.5\n")
    with pytest.raises(KitError) as e:
        submit("dogs-vs-cats-redux-kernels-edition", csv, "m")
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)
    assert "0123456789abcdef" not in str(e.value)
    assert csv.read_text() == "id,label\n1,0.5\n"


def _zip(files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buffer.getvalue()


def test_download_unzips_the_archive_and_the_archives_inside_it(kaggle_server, tmp_path):
    inner = _zip({"train/cat.1.jpg": b"jpeg bytes", "train/dog.1.jpg": b"more"})
    kaggle_server.files["/files/dvc.zip"] = _zip({"train.zip": inner, "sample_submission.csv": b"id,label\n1,0.5\n"})
    kaggle_server.replies["DownloadDataFiles"] = (302, b"", {"Location": "http://localhost/files/dvc.zip"})
    dest = download("dvc", tmp_path / "data" / "dvc")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "sample_submission.csv", "train/cat.1.jpg", "train/dog.1.jpg"]
    assert kaggle_server.calls[0][1] == {"competitionName": "dvc"}
    assert download("dvc", dest) == dest  # already there: nothing fetched
    assert len([m for m in kaggle_server.methods() if m == "DownloadDataFiles"]) == 1


def test_a_refused_download_leaves_no_half_folder(kaggle_server, tmp_path):
    kaggle_server.replies["DownloadDataFiles"] = (403, {"code": 403, "message": "Permission 'competitions.get' was denied"}, {})
    with pytest.raises(KitError, match="Kaggle refused the download: Permission 'competitions.get' was denied"):
        download("secret", tmp_path / "data" / "secret")
    assert not (tmp_path / "data" / "secret").exists() and list((tmp_path / "data").iterdir()) == []
