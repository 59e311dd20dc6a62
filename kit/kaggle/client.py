"""The official `kaggle` client: download a competition's data, submit a CSV.

Importing `kaggle` authenticates at import time and prints help when it cannot, so it is
imported here, late and with its output captured: the kit works without credentials until a
Kaggle command runs. The kit never prints or stores credentials.
"""
import contextlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from kit import KitError

SETUP = ("no Kaggle credentials: create a token at https://www.kaggle.com/settings (API, Create New "
         "Token) and save it as ~/.kaggle/kaggle.json with chmod 600, or set KAGGLE_USERNAME and KAGGLE_KEY")
# What competition_submit answers when the upload did not complete (kaggle 2.2 names it
# KaggleApi.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE; 2.0.2, Kaggle's image's, only says it).
UPLOAD_FAILED = "Could not submit to competition"
HINTS = {
    401: "check your Kaggle token",
    403: "join the competition and accept its rules on its Kaggle page, and check the slug",
    404: "check the competition or kernel name",
}


def kaggle_user(given="", what="the kernel id"):
    """The Kaggle user name an id (`what`) starts with: given, KAGGLE_USERNAME, or kaggle.json's
    username (the key in that file is never read)."""
    if given or os.environ.get("KAGGLE_USERNAME"):
        return given or os.environ["KAGGLE_USERNAME"]
    token = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
    try:
        name = json.loads(token.read_text()).get("username")
    except (OSError, ValueError, AttributeError):
        name = None
    if not name:
        raise KitError(f"no Kaggle user name for {what}: give user=<your Kaggle name>, set "
                       "KAGGLE_USERNAME, or save your API token as ~/.kaggle/kaggle.json")
    return name


def client():
    """An authenticated KaggleApi, or one line saying how to set credentials up."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
        except SystemExit:
            raise KitError(SETUP) from None
    return api


@contextlib.contextmanager
def refusals(what):
    """Kaggle's refusals and network failures as one line each."""
    import requests

    try:
        yield
    except requests.HTTPError as e:
        status = getattr(e.response, "status_code", None)
        reason = str(e).split(" for url:")[0]  # the server's message, or "403 Client Error: Forbidden"
        hint = f" ({HINTS[status]})" if status in HINTS else ""
        raise KitError(f"Kaggle refused the {what}: {reason}{hint}") from None
    except requests.RequestException as e:
        raise KitError(f"cannot reach Kaggle for the {what} ({type(e).__name__})") from None
    except ValueError as e:  # the client's own checks, e.g. "Cannot access kernel ..."
        raise KitError(f"Kaggle refused the {what}: {str(e).split('. ')[0]}") from None


def download(slug, dest, force=False):
    """Fetch the competition's files and unzip them (nested archives too) into `dest`."""
    dest = Path(dest)
    if dest.is_dir() and any(dest.iterdir()) and not force:
        print(f"{dest} is already there: force=1 downloads it again")
        return dest
    api = client()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{slug}-", dir=dest.parent))
    try:
        with refusals("download"):
            api.competition_download_files(slug, path=str(tmp), force=True, quiet=True)
        if not any(tmp.iterdir()):
            raise KitError(f"Kaggle sent no files for {slug}")
        _unzip_all(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)  # a complete folder or none: an interrupted download leaves no half
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{slug}: {sum(1 for p in dest.rglob('*') if p.is_file())} files in {dest}")
    return dest


def _unzip_all(folder):
    """Extract every zip under `folder` where it lies, then delete it; repeat for zips inside."""
    for _ in range(10):
        archives = sorted(folder.rglob("*.zip"))
        if not archives:
            return
        for archive in archives:
            try:
                with zipfile.ZipFile(archive) as z:
                    z.extractall(archive.parent)  # zipfile drops absolute and ".." parts
            except zipfile.BadZipFile:
                raise KitError(f"Kaggle sent a broken archive: {archive.name}") from None
            archive.unlink()


def listed_metric(slug):
    """The evaluation metric Kaggle lists for the competition ("Categorization Accuracy"), or ""."""
    api = client()
    with refusals("competition lookup"):
        found = api.competitions_list(search=slug)
    for competition in getattr(found, "competitions", None) or []:
        if competition.ref.rstrip("/").rsplit("/", 1)[-1] == slug:  # a slug, or its page's address
            return competition.evaluation_metric or ""
    return ""


def submit(slug, path, message):
    """Send the CSV; the file is kept whatever Kaggle answers."""
    api = client()
    with refusals("submission"):
        response = api.competition_submit(str(path), message, slug, quiet=True)
    if response.message == UPLOAD_FAILED:
        raise KitError(f"the upload of {path} to Kaggle did not complete; the file is kept: try again")
    return response.message, response.ref


def push(folder):
    """`kaggle kernels push` of a bundle folder: (url, version)."""
    api = client()
    with refusals("kernel push"):
        response = api.kernels_push(str(folder))
    if response.error:
        raise KitError(f"Kaggle refused the kernel push of {folder}: {response.error}")
    unknown = [*response.invalid_dataset_sources, *response.invalid_competition_sources,
               *response.invalid_kernel_sources, *response.invalid_model_sources]
    if unknown:
        raise KitError(f"Kaggle does not know these kernel inputs: {', '.join(unknown)}")
    return response.url, response.version_number


def kernel_status(kernel):
    """(status name, failure message) of a pushed kernel's latest run."""
    api = client()
    with refusals("status request"):
        response = api.kernels_status(kernel)
    return response.status.name, response.failure_message


def kernel_output(kernel, folder, pattern=None):
    """Download a kernel's output files (those matching `pattern`) and its log into `folder`."""
    api = client()
    with refusals("output download"):
        files, _ = api.kernels_output(kernel, str(folder), file_pattern=pattern, force=True, quiet=True)
    return files


def publish(folder, dataset, notes):
    """A release folder as the private dataset `dataset` (owner/slug): created the first time, a
    new version after. Returns what was done ("created" or "new version")."""
    import requests

    api = client()
    with refusals("dataset upload"):
        try:
            api.dataset_status(dataset)
            exists = True
        except requests.HTTPError as e:
            if getattr(e.response, "status_code", None) != 404:
                raise
            exists = False
        if exists:
            response = api.dataset_create_version(str(folder), notes, quiet=True, convert_to_csv=False)
        else:
            response = api.dataset_create_new(str(folder), public=False, quiet=True, convert_to_csv=False)
    if response.error:
        raise KitError(f"Kaggle refused the dataset {dataset}: {response.error}")
    return "new version" if exists else "created"


def submit_code(slug, kernel, version, message, output="submission.csv"):
    """Submit the file `output` that version `version` of `kernel` (owner/slug) writes."""
    api = client()
    with refusals("code submission"):
        response = api.competition_submit_code(output, message, slug, kernel=kernel, kernel_version=version,
                                               quiet=True)
    return response.message, response.ref
