import zipfile

import pytest
from conftest import patch_path, write_patch

from helpers import download
from helpers.index import DataError, build_index


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
