import hashlib
import json
import subprocess
import sys

import pytest
from conftest import ROOT, files_under, patch_path, write_patch

from helpers.data.index import COLUMNS, DataError, build_index
from helpers.data.splits import read_patient_list


def test_valid_tree_is_indexed_with_positions(tree):
    df, report = build_index(tree)
    assert list(df.columns) == COLUMNS
    assert len(df) == 10 and report.unique_patches == 10 and report.files_seen == 10
    assert report.patients == 2 and report.positives == 2 and report.negatives == 8
    assert report.skipped == {} and report.duplicates_merged == 0
    assert set(df["patient"]) == {"1", "2"}
    row = df[(df.patient == "1") & (df.x == 101) & (df.y == 51)].iloc[0]
    assert row["label"] == 1 and (row["width"], row["height"]) == (50, 50)


def test_nested_tree_is_merged_and_identical_copies_counted(tree):
    # An identical copy of a top-level patch, and a patch that only the nested tree has.
    src = patch_path(tree, 2, 1, 1, 0)
    copy = patch_path(tree, 2, 1, 1, 0, nested=True)
    copy.parent.mkdir(parents=True)
    copy.write_bytes(src.read_bytes())
    write_patch(patch_path(tree, 3, 1, 1, 1, nested=True))
    df, report = build_index(tree)
    assert report.files_seen == 12
    assert report.duplicates_merged == 1
    assert report.unique_patches == 11 and report.patients == 3
    kept = df[(df.patient == "2") & (df.x == 1) & (df.y == 1)]
    assert len(kept) == 1 and "IDC_regular_ps50_idx5" not in kept.iloc[0]["path"]


def test_nested_copy_with_different_pixels_is_reported(tree):
    write_patch(patch_path(tree, 2, 1, 1, 0, nested=True), colour=(1, 2, 3))
    df, report = build_index(tree)
    assert report.skipped == {"conflicting_duplicate": 1}
    assert report.unique_patches == 10 and report.duplicates_merged == 0


def test_bad_files_are_counted_by_category(tree):
    good = patch_path(tree, 1, 1, 1, 0)
    (good.parent / "notes.jpg").write_bytes(b"\xff\xd8\xff")                        # bad name
    patch_path(tree, 1, 501, 1, 0).write_bytes(good.read_bytes()[:40])              # truncated PNG
    patch_path(tree, 1, 551, 1, 0).write_bytes(b"")                                 # zero bytes
    patch_path(tree, 1, 601, 1, 0).write_bytes(b"this is not a png at all")         # not a PNG
    write_patch(patch_path(tree, 1, 651, 1, 1, folder_label=0))                     # label != folder
    write_patch(tree / "2" / "0" / "3_idx5_x1_y1_class0.png")                       # patient != folder
    write_patch(tree / "stray.png")                                                 # outside layout
    (tree / "4").mkdir()                                                            # empty patient folder
    jpeg = patch_path(tree, 1, 701, 1, 0)
    from PIL import Image
    Image.new("RGB", (50, 50)).save(jpeg, format="JPEG")                            # JPEG named .png

    df, report = build_index(tree)
    assert report.unique_patches == 10
    assert report.skipped == {"bad_name": 1, "undecodable": 3, "empty_file": 1,
                              "label_mismatch": 1, "patient_mismatch": 1, "outside_layout": 1}
    assert report.files_seen == 10 + 8
    assert [p.endswith("/4") for p in report.empty_patient_folders] == [True]
    reasons = {r for _, r, _ in report.skipped_files}
    assert reasons == set(report.skipped)
    summary = report.summary()
    assert summary["skipped_total"] == 8
    assert any("format JPEG" in e["detail"] for e in summary["skipped_examples"]["undecodable"])


def test_pngs_that_training_cannot_decode_are_not_indexed(idc_sample, tmp_path):
    """A real patch without its IEND chunk, and one with a flipped bit in a chunk: PIL decodes both,
    TensorFlow's decoder (training's) refuses both, so the index must refuse them, naming the file."""
    import tensorflow as tf

    real = sorted((idc_sample / "10253" / "0").glob("*.png"))[0].read_bytes()
    flipped = bytearray(real)
    flipped[60] ^= 1
    root = tmp_path / "idc"
    write_patch(patch_path(root, 7, 1, 1, 0))
    damaged = {patch_path(root, 7, 51, 1, 0): real[:-12], patch_path(root, 7, 101, 1, 0): bytes(flipped)}
    for path, data in damaged.items():
        path.write_bytes(data)
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.io.decode_png(data)
    df, report = build_index(root)
    assert len(df) == 1 and report.skipped == {"undecodable": 2}
    assert {path for path, _, _ in report.skipped_files} == {str(p) for p in damaged}


def test_patches_larger_than_50_are_kept_and_counted(tree):
    write_patch(patch_path(tree, 2, 101, 1, 0), size=(80, 80))
    df, report = build_index(tree)
    assert report.large_patches == 1 and report.small_patches == 0 and len(df) == 11
    assert report.summary()["large_patches"] == 1


def test_small_rgba_and_grayscale_patches_are_kept(tree):
    write_patch(patch_path(tree, 2, 101, 1, 0), size=(50, 23))
    write_patch(patch_path(tree, 2, 101, 51, 0), size=(17, 50), mode="RGBA")
    write_patch(patch_path(tree, 2, 101, 101, 0), mode="L")
    df, report = build_index(tree)
    assert report.unique_patches == 13
    assert report.small_patches == 2
    sizes = df[(df.patient == "2") & (df.x == 101)].set_index("y")[["width", "height"]]
    assert sizes.loc[1].tolist() == [50, 23] and sizes.loc[51].tolist() == [17, 50]


def test_missing_empty_and_useless_directories_raise(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_index(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        build_index(tmp_path / "empty")
    write_patch(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no usable patch"):
        build_index(tmp_path / "flat")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        build_index(tmp_path / "file")


def test_shipped_sample_matches_its_checksums(idc_sample):
    """Every PNG of data/idc-sample is listed in SHA256SUMS with the right hash, and nothing else is."""
    listed = {}
    for line in (idc_sample / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    on_disk = set(files_under(idc_sample, "*.png"))
    assert on_disk == set(listed)
    changed = [name for name in sorted(on_disk)
               if hashlib.sha256((idc_sample / name).read_bytes()).hexdigest() != listed[name]]
    assert changed == []


def test_shipped_sample_numbers_are_its_manifests(idc_sample):
    manifest = json.loads((idc_sample / "manifest.json").read_text())
    df, report = build_index(idc_sample)
    assert report.files_seen == manifest["files_seen"]
    assert report.unique_patches == manifest["unique_patches"] == len(df)
    assert report.patients == manifest["patients"] == df["patient"].nunique()
    assert (report.positives, report.negatives) == (manifest["positives"], manifest["negatives"])
    assert report.duplicates_merged == manifest["duplicates_merged"]
    assert report.small_patches == manifest["small_patches"]
    assert report.skipped == {}  # its README, SHA256SUMS and manifest.json are not patches
    assert not df.duplicated(["patient", "x", "y", "label"]).any()
    # the README quotes the same numbers
    readme = (idc_sample / "README.md").read_text()
    for key in ("unique_patches", "positives", "negatives", "patients", "small_patches"):
        assert f"{manifest[key]:,}" in readme, key
    # the benchmark's test patients are withheld: none is in the sample
    withheld = set(read_patient_list(idc_sample.parent / "splits" / "cases_test.txt"))
    assert len(withheld) == 49 and not withheld & set(df["patient"])


def test_cli_prints_json_summary(tree, tmp_path):
    out = subprocess.run([sys.executable, "-m", "helpers", "index", str(tree), "--save",
                          str(tmp_path / "i.csv")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    for key in ("files_seen", "unique_patches", "patients", "positives", "negatives",
                "duplicates_merged", "small_patches", "skipped"):
        assert key in summary
    assert summary["unique_patches"] == 10 and (tmp_path / "i.csv").is_file()


def test_cli_missing_directory_is_one_clear_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "helpers", "index", str(tmp_path / "missing")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: data directory {tmp_path / 'missing'} does not exist"


def test_the_saved_index_is_rebuilt_when_a_file_deep_inside_changes(tree, tmp_path):
    import os

    from helpers.data import cache

    first, _ = cache.cached_index(tree, tmp_path / "out")
    assert [p.suffix for p in sorted((tmp_path / "out" / "index").iterdir())] == [".csv", ".json"]
    again, _ = cache.cached_index(tree, tmp_path / "out")
    assert len(first) == len(again) == 10
    inner = patch_path(tree, 2, 1, 1, 0)
    top = os.stat(tree)
    write_patch(inner, size=(40, 50))  # the same name, other bytes: only the file's size and time change
    os.utime(tree, ns=(top.st_atime_ns, top.st_mtime_ns))  # the top folder looks untouched
    changed, _ = cache.cached_index(tree, tmp_path / "out")
    assert changed.loc[changed["path"] == str(inner), "width"].item() == 40
    assert cache.tree_stamp(tmp_path / "missing") is None


def test_a_linked_patient_folder_is_indexed_and_a_link_loop_is_walked_once(tree, tmp_path):
    import os

    elsewhere = tmp_path / "elsewhere"
    write_patch(patch_path(elsewhere, 9, 1, 1, 1))
    os.symlink(elsewhere / "9", tree / "9")
    os.symlink(tree, tree / "2" / "loop")  # a link back up the tree
    df, report = build_index(tree)
    assert report.unique_patches == 11 and set(df["patient"]) == {"1", "2", "9"}
    assert df.loc[df["patient"] == "9", "label"].tolist() == [1]
    from helpers.data import cache

    assert cache.tree_stamp(tree) == cache.tree_stamp(tree)  # the loop ends here too
