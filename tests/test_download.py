import errno
import json
import os
import shutil
import socket
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import patch_path, write_patch

from helpers.data import download
from helpers.data.index import DataError, build_index


def make_zip(tmp_path, nested_only=False):
    src = tmp_path / "src"
    write_patch(patch_path(src, 5, 1, 1, 0, nested=True))
    if not nested_only:
        write_patch(patch_path(src, 5, 1, 1, 0))
        write_patch(patch_path(src, 6, 51, 1, 1))
    archive = tmp_path / "breast-histopathology-images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in src.rglob("*.png"):
            zf.write(f, f.relative_to(src))
    return archive


def test_unpack_finds_the_root_and_indexes_like_the_archive(tmp_path):
    root = download.unpack(make_zip(tmp_path), tmp_path / "data")
    assert root == tmp_path / "data"
    df, report = build_index(root)
    assert report.files_seen == 3 and report.duplicates_merged == 1 and report.unique_patches == 2
    again = download.unpack(make_zip(tmp_path), tmp_path / "data")   # already unpacked: no work
    assert again == root


def test_root_found_below_a_wrapper_folder(tmp_path):
    write_patch(patch_path(tmp_path / "versions" / "1", 9, 1, 1, 1))
    assert download.find_data_root(tmp_path) == tmp_path / "versions" / "1"
    (tmp_path / "z").mkdir()
    only_nested = download.unpack(make_zip(tmp_path / "z", nested_only=True), tmp_path / "n")
    assert only_nested == tmp_path / "n"


def test_bad_archives_and_folders_raise(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        download.unpack(tmp_path / "missing.zip", tmp_path / "d")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.zip is not a valid zip"):
        download.unpack(bad, tmp_path / "d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no <patient>/<0|1>/ folders"):
        download.find_data_root(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown download method 'ftp'"):
        download.download_idc(tmp_path / "d", method="ftp")


# --- download_idc: the network replaced by a copy of a small local tree -------------------------

SMALL = {"unique_patches": 4, "patients": 3, "positives": 2}  # the counts of small_tree()


def small_tree(root):
    """Patients 5 and 6 at the top, a nested copy of one of 5's patches and a nested-only patient 7."""
    for patient, x, label, nested in ((5, 1, 0, False), (5, 51, 1, False), (6, 1, 1, False),
                                      (5, 1, 0, True), (7, 1, 0, True)):
        write_patch(patch_path(root, patient, x, 1, label, nested=nested))
    return root


@pytest.fixture
def kaggle(tmp_path, monkeypatch):
    """kagglehub.dataset_download stood in for: it copies a small tree into its cache (where
    KAGGLEHUB_CACHE points) the way kagglehub lays it out, or raises ``kaggle.error``."""
    import kagglehub

    source = small_tree(tmp_path / "kaggle-source")
    state = SimpleNamespace(calls=[], error=None, source=source)

    def dataset_download(handle, path=None, *, force_download=False, output_dir=None):
        state.calls.append((handle, os.environ.get("KAGGLEHUB_CACHE"), force_download))
        if state.error is not None:
            raise state.error
        out = Path(os.environ["KAGGLEHUB_CACHE"]) / "datasets" / handle / "versions" / "1"
        shutil.copytree(state.source, out, dirs_exist_ok=True)
        return str(out)

    monkeypatch.setattr(kagglehub, "dataset_download", dataset_download)
    monkeypatch.delenv("KAGGLEHUB_CACHE", raising=False)
    return state


def offline_error():
    import requests

    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as cause:
            raise requests.exceptions.ConnectionError("HTTPSConnectionPool(host='api.kaggle.com', port=443): "
                                                      "Max retries exceeded") from cause
    except requests.exceptions.ConnectionError as exc:
        return exc


def test_first_call_downloads_and_checks_a_second_reuses_without_network(tmp_path, kaggle):
    dest, said = tmp_path / "idc", []
    root = download.download_idc(dest, expected=SMALL, output_dir=tmp_path / "out", echo=said.append)
    assert root == dest / "datasets" / download.KAGGLE_DATASET / "versions" / "1"
    # kagglehub's cache pointed at dest for the call (so a broken download resumes there), then put back
    assert kaggle.calls == [(download.KAGGLE_DATASET, str(dest), False)]
    assert "KAGGLEHUB_CACHE" not in os.environ
    record = json.loads((dest / "checked.json").read_text())
    assert record["root"] == str(root) and {k: record[k] for k in SMALL} == SMALL
    assert said[0].startswith("downloading the IDC set from Kaggle") and "resumes" in said[0]
    assert said[-1] == "the IDC set is complete: 4 patches of 3 patients"
    assert len(list((tmp_path / "out" / "index").glob("*.csv"))) == 1  # the notebooks' index, built once

    kaggle.error = offline_error()  # a second call must not need the network
    said.clear()
    assert download.download_idc(dest, expected=SMALL, echo=said.append) == root
    assert len(kaggle.calls) == 1 and said == [f"the IDC set is here already (checked before): {root}"]


def test_force_a_moved_set_or_another_expectation_fetch_again(tmp_path, kaggle):
    dest, quiet = tmp_path / "idc", lambda _: None
    root = download.download_idc(dest, expected=SMALL, output_dir=tmp_path / "out", echo=quiet)
    download.download_idc(dest, expected=SMALL, output_dir=tmp_path / "out", force=True, echo=quiet)
    assert [c[2] for c in kaggle.calls] == [False, True]
    shutil.rmtree(root)  # the record points at a folder that is gone
    assert download.download_idc(dest, expected=SMALL, output_dir=tmp_path / "out", echo=quiet) == root
    assert len(kaggle.calls) == 3
    assert download.checked_root(dest, SMALL) == root
    assert download.checked_root(dest, {**SMALL, "patients": 4}) is None
    (dest / "checked.json").write_text("{not json")
    assert download.checked_root(dest, SMALL) is None


def test_a_partial_set_fails_the_count_check_with_one_line(tmp_path, kaggle):
    dest = tmp_path / "idc"
    with pytest.raises(download.DownloadError) as caught:
        download.download_idc(dest, output_dir=tmp_path / "out", echo=lambda _: None)  # the real counts
    root = dest / "datasets" / download.KAGGLE_DATASET / "versions" / "1"
    message = str(caught.value)
    assert message.startswith(f"the IDC set at {root} is not complete: its index holds 4 unique patches, "
                              "3 patients, 2 positives, the Kaggle set 277,524 unique patches, 279 patients, "
                              "78,786 positives (a partial download or unpacking?)")
    assert "python -m helpers download --force" in message and "DATA_DIR=" in message and "\n" not in message
    assert not (dest / "checked.json").exists()  # nothing recorded: the next call checks again


def test_offline_is_one_clear_line(tmp_path, kaggle):
    kaggle.error = offline_error()
    with pytest.raises(download.DownloadError) as caught:
        download.download_idc(tmp_path / "idc", expected=SMALL, echo=lambda _: None)
    message = str(caught.value)
    assert message.startswith("could not download the IDC set from Kaggle (no connection to kaggle.com): "
                              "are you offline? Or download it by hand from "
                              "https://www.kaggle.com/datasets/paultimothymooney/breast-histopathology-images")
    assert message.endswith("give DATA_DIR=<the unzipped folder> (make run-all PROFILE=full DATA_DIR=...)")
    assert "\n" not in message and "KAGGLEHUB_CACHE" not in os.environ


def test_a_token_is_asked_for_only_when_kaggle_refuses(tmp_path, kaggle):
    import requests

    response = requests.Response()
    response.status_code = 403
    kaggle.error = requests.HTTPError("403 Client Error", response=response)
    with pytest.raises(download.DownloadError, match=r"^Kaggle refused the download \(HTTP 403\): it asks for "
                       r"your Kaggle API token\. Create one at https://www\.kaggle\.com/settings"):
        download.download_idc(tmp_path / "idc", expected=SMALL, echo=lambda _: None)
    kaggle.error = RuntimeError("the archive is odd\nsecond line")
    with pytest.raises(download.DownloadError, match=r"^could not download the IDC set from Kaggle "
                       r"\(RuntimeError: the archive is odd\); run again to resume, or download it by hand"):
        download.download_idc(tmp_path / "idc", expected=SMALL, echo=lambda _: None)
    full = OSError(errno.ENOSPC, "No space left on device")
    assert download.failure_message(full).startswith("the disk is full")


def test_an_injected_downloader_and_its_errors(tmp_path):
    fetched = small_tree(tmp_path / "unzipped")
    root = download.download_idc(tmp_path / "idc", expected=SMALL, output_dir=tmp_path / "out",
                                 fetch=lambda dest, force: fetched, echo=lambda _: None)
    assert root == fetched

    def no_layout(dest, force):
        (dest / "junk").mkdir()
        return dest

    with pytest.raises(DataError, match="no <patient>/<0|1>/ folders found under"):
        download.download_idc(tmp_path / "other", expected=SMALL, fetch=no_layout, echo=lambda _: None)


def test_the_download_command_prints_the_root_or_one_error_line(tmp_path, kaggle, capsys):
    from helpers.__main__ import main

    kaggle.error = offline_error()
    assert main(["download", "--dest", str(tmp_path / "idc")]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and lines[-1].startswith("error: could not download the IDC set from Kaggle (no connection")
    assert lines[0].startswith("downloading the IDC set") and len(lines) == 2


def test_run_all_full_downloads_once_before_any_notebook(tmp_path, kaggle, monkeypatch, capsys):
    from helpers.tools import run_all

    ran = []
    monkeypatch.setattr(run_all, "run_all", lambda notebooks, out_dir, parameters, **kw: ran.append(parameters) or [])
    monkeypatch.setattr(run_all, "summary", lambda outcomes: "")
    monkeypatch.setattr(download, "DEFAULT_DEST", tmp_path / "idc")
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "00_data.ipynb").write_text("{}")
    args = dict(out_dir=tmp_path / "out", notebooks_dir=tmp_path / "nb", kernel="python3")

    kaggle.error = offline_error()
    assert run_all.main("full", None, **args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: could not download the IDC set from Kaggle (no connection to kaggle.com)")
    assert ran == []  # no notebook started

    # checked before (here with the small tree's counts): no network, and DATA_DIR is its root
    root = download.download_idc(expected=SMALL, output_dir=tmp_path / "out", fetch=lambda d, f: kaggle.source,
                                 echo=lambda _: None)
    monkeypatch.setattr(download, "EXPECTED", SMALL)
    assert run_all.main("full", None, **args) == 0
    assert ran == [{"PROFILE": "full", "DATA_DIR": str(root.resolve())}]
    assert run_all.main("smoke", "generated", **args) == 0
    assert ran[-1] == {"PROFILE": "smoke", "DATA_DIR": "generated"}  # a keyword, not a folder
    assert run_all.main("smoke", None, **args) == 0
    assert ran[-1]["DATA_DIR"] == str(download.ROOT / "data" / "idc-sample")
    assert run_all.main("huge", None, **args) == 2
    assert "error: unknown profile 'huge'" in capsys.readouterr().err
    assert len(kaggle.calls) == 1
