"""helpers.thyroid: the thyroid ultrasound index, splits by nodule, model inputs and the generated demo set."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, files_under, tree_digest
from PIL import Image

from helpers.thyroid import generator, index
from helpers.data.index import DataError
from helpers.thyroid.generator import make_demo
from helpers.thyroid.index import COLUMNS, GENERATED_LABEL, build_index, group_id, parse_name, split

NAME = re.compile(r"^([BM])_(\d{3})-(\d{4})-1\.0\.jpg$")


def write_image(path, size=(40, 30), value=120, fmt=None):
    """A small grey image saved as RGB (JPEG or PNG by the extension) at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size[1], size[0], 3), value, np.uint8)
    a[: size[1] // 2] //= 2
    Image.fromarray(a).save(path, format=fmt)
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A 30-nodule x 4-image set (120 images a variant: the process-pool path) and its index."""
    root = tmp_path_factory.mktemp("thyroid") / "demo"
    summary = make_demo(root, n_nodules=30, images_per_nodule=4, seed=0)
    df, report = build_index(root)
    return summary, root, df, report


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name, expected", [
    ("B_001-0002-1.0.jpg", (0, "001")),
    ("M_117-0031-1.0.jpg", (1, "117")),
    ("m_5.png", (1, "5")),
    ("B-042_7.jpeg", (0, "042")),
    ("B_scan.jpg", (0, "scan")),  # a prefix but no number: the image is its own nodule
    ("003-0001-1.0.jpg", (None, "003")),  # a number but no prefix: the label must come from a folder
    ("IMG_0001.jpg", (None, "IMG_0001")),
    ("Bx_001.jpg", (None, "Bx_001")),
])
def test_parse_name(name, expected):
    assert parse_name(name) == expected


def test_group_id_holds_the_class_so_equal_numbers_are_two_nodules():
    assert group_id(0, "001") == "B_001" and group_id(1, "001") == "M_001"
    assert group_id(1, "IMG_9") == "M_IMG_9"
    with pytest.raises(ValueError, match="not 2"):
        group_id(2, "001")
    with pytest.raises(ValueError, match="not None"):
        group_id(None, "001")


# ---------------------------------------------------------------- index


def test_prefix_labels_in_a_flat_folder(tmp_path):
    for name in ("B_001-0002-1.0.jpg", "B_001-0003-1.0.jpg", "M_002-0001-1.0.png", "b_7.jpeg"):
        write_image(tmp_path / name)
    write_image(tmp_path / "M_003-0001-1.0.jpg", size=(64, 48))
    df, report = build_index(tmp_path)
    assert list(df.columns) == COLUMNS
    assert [Path(p).name for p in df["path"]] == ["B_001-0002-1.0.jpg", "B_001-0003-1.0.jpg", "M_002-0001-1.0.png",
                                                  "M_003-0001-1.0.jpg", "b_7.jpeg"]
    assert df["label"].tolist() == [0, 0, 1, 1, 0]
    assert df["group"].tolist() == ["B_001", "B_001", "M_002", "M_003", "B_7"]
    assert set(df["variant"]) == {""} and set(df["subset"]) == {""}
    assert df[["width", "height"]].values.tolist() == [[40, 30]] * 3 + [[64, 48], [40, 30]]
    assert (report.files_seen, report.images, report.groups, report.benign, report.malignant) == (5, 5, 4, 3, 2)
    assert report.counts == {"all": {"benign": 3, "malignant": 2}} and report.skipped == {}
    assert report.width_range == [40, 64] and report.height_range == [30, 48]


def test_class_folders_label_files_without_a_prefix(tmp_path):
    write_image(tmp_path / "benign" / "a.jpg")
    write_image(tmp_path / "Malignant" / "IMG_9.png")
    write_image(tmp_path / "BENIGN" / "003-0001-1.0.jpg")
    write_image(tmp_path / "malignant" / "M_004-0001-1.0.jpg")  # prefix and folder agree
    df, report = build_index(tmp_path)
    got = {Path(p).name: (label, group) for p, label, group in zip(df["path"], df["label"], df["group"])}
    assert got == {"a.jpg": (0, "B_a"), "IMG_9.png": (1, "M_IMG_9"), "003-0001-1.0.jpg": (0, "B_003"),
                   "M_004-0001-1.0.jpg": (1, "M_004")}
    assert report.skipped == {} and (report.benign, report.malignant) == (2, 2)


def test_variants_and_subsets_from_folders(tmp_path):
    for variant in ("cropped", "Uncropped"):
        write_image(tmp_path / variant / "train" / "B_001-0001-1.0.jpg")
        write_image(tmp_path / variant / "train" / "benign" / "B_001-0002-1.0.jpg")
        write_image(tmp_path / variant / "Test2" / "malignant" / "M_002-0001-1.0.jpg")
    write_image(tmp_path / "Uncropped" / "Train" / "M_003-0001-1.0.jpg")
    df, report = build_index(tmp_path)
    assert df[["variant", "subset", "label", "group"]].values.tolist() == [
        ["cropped", "test", 1, "M_002"], ["cropped", "train", 0, "B_001"], ["cropped", "train", 0, "B_001"],
        ["uncropped", "test", 1, "M_002"], ["uncropped", "train", 1, "M_003"], ["uncropped", "train", 0, "B_001"],
        ["uncropped", "train", 0, "B_001"]]
    assert report.counts == {"cropped/test": {"benign": 0, "malignant": 1},
                             "cropped/train": {"benign": 2, "malignant": 0},
                             "uncropped/test": {"benign": 0, "malignant": 1},
                             "uncropped/train": {"benign": 2, "malignant": 1}}
    assert report.variants == ["cropped", "uncropped"] and report.subsets == ["test", "train"]
    assert report.groups == 3 and report.groups_in_train_and_test == [] and report.moved_to_test == 0

    # A variant folder as root: its train/test folders are read, the variant is "" (no variant folder below).
    df, report = build_index(tmp_path / "cropped")
    assert set(df["variant"]) == {""} and df["subset"].tolist() == ["test", "train", "train"]


def test_bad_files_are_counted_by_category(tmp_path):
    good = [write_image(tmp_path / "train" / "B_001-0001-1.0.jpg"),
            write_image(tmp_path / "train" / "benign" / "002-0001-1.0.png")]
    (tmp_path / "train" / "B_003-0001-1.0.jpg").write_bytes(b"not a jpeg at all")  # corrupt
    data = write_image(tmp_path / "x.jpg", size=(200, 150)).read_bytes()
    (tmp_path / "x.jpg").unlink()
    (tmp_path / "train" / "M_004-0001-1.0.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (tmp_path / "train" / "M_005-0001-1.0.jpg").write_bytes(b"")  # empty
    (tmp_path / "train" / "notes.txt").write_text("hello")  # unsupported
    write_image(tmp_path / "train" / "B_006-0001-1.0.bmp", fmt="BMP")  # unsupported, although an image
    write_image(tmp_path / "train" / "scan_0007.jpg")  # no prefix, no class folder: no label
    write_image(tmp_path / "train" / "malignant" / "B_008-0001-1.0.jpg")  # prefix disagrees with its folder
    write_image(tmp_path / "benign" / "x" / "malignant" / "009-0001-1.0.jpg")  # two class folders disagree
    write_image(tmp_path / "test" / "M_010-0001-1.0.jpg", fmt="GIF")  # named .jpg, holds a GIF
    (tmp_path / ".DS_Store").write_bytes(b"\0")  # not data, not counted
    (tmp_path / "README.txt").write_text("not data")  # not data, not counted

    df, report = build_index(tmp_path)
    assert sorted(df["path"]) == sorted(map(str, good))
    assert report.skipped == {"undecodable": 3, "empty_file": 1, "unsupported_extension": 2, "no_label": 1,
                              "label_mismatch": 1, "folder_conflict": 1}
    assert report.files_seen == 11 and len(report.skipped_files) == 9
    reasons = {Path(p).name: (reason, detail) for p, reason, detail in report.skipped_files}
    assert reasons["B_008-0001-1.0.jpg"] == ("label_mismatch", "name says benign, folder malignant")
    assert reasons["M_010-0001-1.0.jpg"][1] == "format GIF, expected JPEG or MPO or PNG"
    assert "truncated" in reasons["M_004-0001-1.0.jpg"][1]
    summary = json.loads(report.to_json())
    assert summary["skipped_total"] == 9 and summary["images"] == 2
    assert summary["skipped_examples"]["unsupported_extension"][0]["detail"] in ("extension '.bmp'", "extension '.txt'")


def test_missing_empty_and_unusable_dirs_raise_naming_the_path(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'nope'} does not exist")):
        build_index(tmp_path / "nope")
    (tmp_path / "empty" / "cropped").mkdir(parents=True)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'empty'} holds no files")):
        build_index(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.txt").write_text("x")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "bad")) + ".*unsupported_extension"):
        build_index(tmp_path / "bad")
    write_image(tmp_path / "file.jpg")
    with pytest.raises(DataError, match="not a folder"):
        build_index(tmp_path / "file.jpg")


def test_report_counts_shared_numbers_and_nodules_in_both_given_folders(tmp_path):
    write_image(tmp_path / "train" / "B_001-0001-1.0.jpg")
    write_image(tmp_path / "train" / "B_001-0004-1.0.jpg")
    write_image(tmp_path / "test" / "B_001-0002-1.0.jpg")  # nodule B_001 in both given folders
    write_image(tmp_path / "train" / "M_001-0003-1.0.jpg")  # another nodule with the same number
    write_image(tmp_path / "train" / "M_002-0001-1.0.jpg")
    write_image(tmp_path / "test" / "M_003-0001-1.0.jpg")
    df, report = build_index(tmp_path)
    assert df["group"].tolist() == ["B_001", "M_003", "B_001", "B_001", "M_001", "M_002"]
    assert report.groups == 4 and report.numbers_in_both_classes == ["001"]
    # B_001's two training-folder images are the ones split() moves to test
    assert report.groups_in_train_and_test == ["B_001"] and report.moved_to_test == 2
    summary = report.summary()
    assert summary["numbers_in_both_classes_total"] == 1 and summary["groups_in_train_and_test"] == ["B_001"]
    assert summary["moved_to_test"] == 2 and "mixed_label_groups" not in summary


# ---------------------------------------------------------------- splits


def index_table(groups, variants=("cropped", "uncropped"), subset_of=None, per_group=3):
    """A hand-made index: ``groups`` {group: label}, ``per_group`` images in each variant."""
    rows = []
    for variant in variants:
        for g, label in groups.items():
            for k in range(per_group):
                subset = subset_of(g) if subset_of else ""
                rows.append((f"/x/{variant}/{subset}/{'BM'[label]}_{g}-{k:04d}.jpg", label, variant, subset, g, 40, 30))
    return pd.DataFrame(rows, columns=COLUMNS)


GROUPS = {f"{i:03d}": int(i % 5 == 0) for i in range(1, 41)}  # 40 groups, 8 malignant


def test_split_draws_whole_groups_per_class_the_same_in_every_variant():
    df = split(index_table(GROUPS), val=0.15, test=0.2, seed=0)
    assert set(df["split"]) == {"train", "val", "test"}
    per_group = df.groupby("group")["split"].nunique()
    assert (per_group == 1).all()  # every image of a group, in both variants, on one side
    owner = df.groupby("group")["split"].first()
    labels = pd.Series(GROUPS)
    # shares of groups per class, rounded: 32 benign -> 6 test, 5 val; 8 malignant -> 2 test, 1 val (round(1.2))
    counts = pd.crosstab(owner, labels.loc[owner.index]).to_dict()
    assert counts == {0: {"test": 6, "train": 21, "val": 5}, 1: {"test": 2, "train": 5, "val": 1}}
    for variant, part in df.groupby("variant"):
        assert len(part) == 120


def test_split_is_deterministic_by_seed():
    base = index_table(GROUPS)
    a, b, c = split(base, seed=3), split(base, seed=3), split(base, seed=4)
    assert a["split"].tolist() == b["split"].tolist()
    assert a["split"].tolist() != c["split"].tolist()
    assert "split" not in base  # the input is not changed


def test_split_respects_given_test_folders():
    test_groups = {g for g in GROUPS if int(g) % 4 == 0}
    df = index_table(GROUPS, subset_of=lambda g: "test" if g in test_groups else "train")
    out = split(df, val=0.25, test=0.5, seed=0)  # test is unused when a test folder is given
    assert (out["split"] == "test").tolist() == (out["subset"] == "test").tolist()
    train = out[out["subset"] == "train"]
    val_groups = set(train.loc[train["split"] == "val", "group"])
    assert len(val_groups) == 8  # 30 groups left: 24 benign -> 6, 6 malignant -> round(1.5) = 2
    assert {GROUPS[g] for g in val_groups} == {0, 1}
    assert (out.groupby("group")["split"].nunique() == 1).all()


def test_split_puts_a_nodule_found_in_both_given_folders_in_test_whole():
    df = index_table({"001": 0, "002": 0, "003": 1, "004": 1}, per_group=2,
                     subset_of=lambda g: "test" if g == "004" else "train")
    # One image of nodule 001, in the uncropped variant only, was filed in the test folder.
    df.loc[(df["group"] == "001") & (df["variant"] == "uncropped"), "subset"] = ["train", "test"]
    out = split(df, val=0, seed=0)
    assert (out.groupby("group")["split"].nunique() == 1).all()  # no nodule on two sides
    assert out.groupby("group")["split"].first().to_dict() == {"001": "test", "002": "train", "003": "train",
                                                                 "004": "test"}
    # its 3 other images (both cropped, the first uncropped) moved from the training folder to test
    assert out["moved_to_test"].sum() == 3
    assert out.loc[out["moved_to_test"], "group"].tolist() == ["001"] * 3
    assert (out.loc[out["moved_to_test"], "subset"] == "train").all()
    assert (out["subset"] == "test").sum() == 5 and (out["split"] == "test").sum() == 8


def test_split_refuses_when_every_nodule_is_in_the_test_folder():
    df = index_table({"001": 0, "002": 1}, variants=("",), per_group=2, subset_of=lambda g: "train")
    df.loc[[0, 2], "subset"] = "test"
    with pytest.raises(ValueError, match="every nodule has an image in the test folder"):
        split(df)


def test_the_same_number_in_both_classes_is_two_nodules_that_split_apart(tmp_path):
    for i in range(1, 7):  # B_001..B_006 and M_001..M_006: twelve nodules, six numbers
        for cls in "BM":
            write_image(tmp_path / f"{cls}_{i:03d}-0001-1.0.jpg")
    df, report = build_index(tmp_path)
    assert report.groups == 12 and len(report.numbers_in_both_classes) == 6
    out = split(df, val=0.2, test=0.2, seed=0)
    owner = out.set_index("group")["split"]
    assert owner.index.is_unique
    assert sorted(out.groupby("split")["group"].nunique().to_dict().items()) == [("test", 2), ("train", 8), ("val", 2)]
    # with the number alone as the id, B_00k and M_00k would share a side; here at least one pair does not
    assert any(owner[f"B_{i:03d}"] != owner[f"M_{i:03d}"] for i in range(1, 7))


@pytest.mark.parametrize("kwargs, message", [
    (dict(val=-0.1), "val fraction must be in [0, 1), got -0.1"),
    (dict(test=1.0), "test fraction must be in [0, 1), got 1.0"),
    (dict(val=0.5, test=0.5), "val + test must leave groups for training, got 0.5 + 0.5"),
])
def test_split_bad_fractions_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        split(index_table(GROUPS), **kwargs)


# ---------------------------------------------------------------- model inputs, tables, figures


def test_load_images_resizes_to_squares_without_keeping_the_aspect(tmp_path):
    a = write_image(tmp_path / "B_001-0001-1.0.jpg", size=(80, 40), value=200)
    b = write_image(tmp_path / "M_002-0001-1.0.png", size=(20, 60), value=100)
    Image.open(b).convert("L").save(b)  # a grey PNG becomes 3 equal channels
    df, _ = build_index(tmp_path)
    x = index.load_images(df, 16)
    assert x.shape == (2, 16, 16, 3) and x.dtype == np.uint8
    assert abs(int(x[0, 0, 0, 0]) - 100) <= 3 and abs(int(x[0, -1, 0, 0]) - 200) <= 3  # top half darker
    assert (x[1, ..., 0] == x[1, ..., 2]).all() and abs(int(x[1, -1, 0, 0]) - 100) <= 1
    a.write_bytes(b"broken")
    with pytest.raises(ValueError, match=re.escape(str(a))):
        index.load_images(df, 16)


def test_counts_table(tmp_path):
    df = index_table({"001": 0, "002": 1, "003": 0}, subset_of=lambda g: "test" if g == "003" else "train",
                     per_group=2)
    table = index.counts_table(df)
    assert table.index.tolist() == [("cropped", "test"), ("cropped", "train"), ("uncropped", "test"),
                                    ("uncropped", "train")]
    assert table.loc[("cropped", "train")].to_dict() == {"benign": 2, "malignant": 2, "images": 4, "groups": 2,
                                                         "malignant %": 50.0}
    assert table.loc[("uncropped", "test"), "benign"] == 2
    flat = index.counts_table(index_table({"001": 0}, variants=("",), per_group=1))
    assert flat.index.tolist() == [("-", "-")]


def test_example_grid_titles_generated_and_real(demo, tmp_path):
    import matplotlib.pyplot as plt

    _, _, df, _ = demo
    fig = index.example_grid(df, n=3)
    assert f"({GENERATED_LABEL})" in fig._suptitle.get_text() and GENERATED_LABEL == "generated thyroid demo data"
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 12 and sum("uncropped" in t for t in titles) == 6
    plt.close(fig)

    for name in ("B_001-0001-1.0.jpg", "M_002-0001-1.0.jpg"):
        write_image(tmp_path / "mine" / name)
    df, _ = build_index(tmp_path / "mine")
    fig = index.example_grid(df, n=2)
    assert "real data: mine" in fig._suptitle.get_text()
    assert len([ax for ax in fig.axes if ax.get_images()]) == 2
    plt.close(fig)


# ---------------------------------------------------------------- generated demo set


def test_demo_layout_names_and_summary(demo):
    summary, root, df, report = demo
    assert (root / "GENERATED.txt").is_file() and (root / "README.txt").is_file()
    assert "NOT PATIENT DATA" in (root / "README.txt").read_text()
    assert json.loads((root / "generated.json").read_text())["summary"] == summary
    cropped = [p.removeprefix("cropped/") for p in files_under(root, "*.jpg") if p.startswith("cropped/")]
    uncropped = [p.removeprefix("uncropped/") for p in files_under(root, "*.jpg") if p.startswith("uncropped/")]
    assert cropped == uncropped and len(cropped) == 120  # the same names in both variants
    assert {p.split("/")[0] for p in cropped} == {"train", "test"}
    names = [NAME.match(p.split("/")[1]) for p in cropped]
    assert all(names)
    by_nodule = {}
    for m, rel in zip(names, cropped):
        by_nodule.setdefault(m[2], set()).add((m[1], rel.split("/")[0]))
    assert len(by_nodule) == 30 and all(len(v) == 1 for v in by_nodule.values())  # one label, one folder a nodule
    assert sorted(int(m[3]) for m in names if m[2] == "001") == [1, 2, 3, 4]

    assert report.skipped == {} and report.images == 240 and report.groups == 30
    assert summary["nodules"] == 30 and summary["malignant_nodules"] == 6  # 20%, as in the seed's data
    assert summary["images_per_variant"] == 120 and summary["malignant"] == 24 == report.malignant // 2
    assert summary["counts"]["cropped/test"] == report.counts["cropped/test"]
    assert abs(df["label"].mean() - 0.2) < 0.05
    test_groups = set(df.loc[df["subset"] == "test", "group"])
    assert 0.1 < len(test_groups) / 30 < 0.3 and not test_groups & set(df.loc[df["subset"] == "train", "group"])


def test_demo_images_frames_and_crops(demo):
    _, _, df, _ = demo
    uncropped, cropped = df[df["variant"] == "uncropped"], df[df["variant"] == "cropped"]
    assert set(zip(uncropped["width"], uncropped["height"])) == {(320, 240)}
    assert cropped["width"].nunique() > 20 and cropped["width"].max() < 320  # crop sizes vary
    assert (cropped["width"] >= 20).all() and (cropped["height"] >= 20).all()
    with Image.open(uncropped["path"].iloc[0]) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        a = np.asarray(im).astype(int)
    assert np.abs(a[..., 0] - a[..., 2]).max() <= 12  # grey content, saved as 3 channels
    assert a[100:170, 16:30].max() < 40 < a[100:140, 140:160].mean()  # black outside the fan, speckle inside
    assert a[:14, :80].max() > 150  # the on-screen text


def test_demo_is_deterministic_by_seed_and_by_workers(demo, tmp_path):
    _, root, _, _ = demo
    make_demo(tmp_path / "a", n_nodules=30, images_per_nodule=4, seed=0, workers=1)  # serial, not the pool
    assert tree_digest(tmp_path / "a", "*.jpg") == tree_digest(root, "*.jpg")
    assert (tmp_path / "a" / "GENERATED.txt").read_text() == (root / "GENERATED.txt").read_text()
    make_demo(tmp_path / "b", n_nodules=30, images_per_nodule=1, seed=1)
    assert tree_digest(tmp_path / "b", "*.jpg") != tree_digest(root, "*.jpg")
    first = {p for p in files_under(tmp_path / "b", "*.jpg")} & {p for p in files_under(root, "*.jpg")}
    assert all((tmp_path / "b" / p).read_bytes() != (root / p).read_bytes() for p in first)


def test_demo_rerun_is_a_no_op_and_a_foreign_folder_is_refused(tmp_path):
    args = dict(n_nodules=3, images_per_nodule=2)
    summary = make_demo(tmp_path / "set", **args)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "set").rglob("*")}
    assert make_demo(tmp_path / "set", **args) == summary
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "set").rglob("*")} == mtimes
    with pytest.raises(ValueError, match="not a thyroid demo set made with"):
        make_demo(tmp_path / "set", seed=1, **args)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=re.escape(str(foreign))):
        make_demo(foreign, **args)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    for bad in (dict(n_nodules=1), dict(images_per_nodule=0)):
        with pytest.raises(ValueError):
            make_demo(tmp_path / "x", **{**args, **bad})
    assert not (tmp_path / "x").exists()


def test_interrupted_demo_leaves_nothing(tmp_path, monkeypatch):
    """Stopped after some images were written: no half set, no staging folder."""
    calls = []
    real = generator._write_nodule

    def stop_at_the_third(job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(generator, "_write_nodule", stop_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        make_demo(tmp_path / "set", n_nodules=5, images_per_nodule=1, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_demo_dir_resolve_dir_and_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("IDC_DEMO_ROOT", str(tmp_path / "demos"))  # beside the generated IDC sets
    monkeypatch.setitem(generator.DEMO_SIZES, "smoke", (4, 1))
    assert generator.demo_dir(4) == tmp_path / "demos" / "thyroid-4n"
    root = generator.resolve_dir(None, "smoke")
    assert root == generator.demo_dir(4) and len(files_under(root, "*.jpg")) == 8
    assert index.is_generated(root) and index.is_generated(root / "cropped" / "train")
    assert index.data_label(root / "uncropped") == "generated thyroid demo data"
    mtime = (root / "generated.json").stat().st_mtime_ns
    assert generator.resolve_dir("", "smoke") == root and (root / "generated.json").stat().st_mtime_ns == mtime
    assert len(files_under(generator.resolve_dir(None, "smoke", seed=1), "*.jpg")) == 8  # another seed replaces the set
    assert json.loads((root / "generated.json").read_text())["params"]["seed"] == 1

    mine = tmp_path / "mine"
    mine.mkdir()
    assert generator.resolve_dir(str(mine)) == mine
    assert not index.is_generated(mine) and index.data_label(mine) == "real data: mine"
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope"))):
        generator.resolve_dir(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        generator.resolve_dir(None, "huge")


def crop_features(path):
    """Five numbers a reader of the crop might look at: log(height / width), the centre's brightness
    against the margin's, its contrast, bright specks and black (fluid) in the centre."""
    a = np.asarray(Image.open(path).convert("L"), np.float32)
    h, w = a.shape
    centre = a[h // 4 : h - h // 4, w // 4 : w - w // 4]
    margin = np.concatenate([a[: h // 8].ravel(), a[h - h // 8 :].ravel(), a[:, : w // 8].ravel(),
                             a[:, w - w // 8 :].ravel()]).mean()
    return [np.log(h / w), centre.mean() / (margin + 1), centre.std() / (centre.mean() + 1),
            (centre > 1.6 * margin + 40).mean(), (centre < 25).mean()]


def test_demo_is_learnable_but_not_trivial(tmp_path):
    """Logistic regressions on the cropped images, scored on held-out nodules (5 folds by group):
    on five handcrafted features and on raw 16x16 grey pixels, each clearly above chance and
    neither perfect (240 nodules of one image: measured 0.83-0.86 and 0.76-0.89 over seeds 0-4)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    make_demo(tmp_path / "set", n_nodules=240, images_per_nodule=1, seed=7)
    df, _ = build_index(tmp_path / "set")
    df = df[df["variant"] == "cropped"].reset_index(drop=True)
    inputs = {"features": np.array([crop_features(p) for p in df["path"]]),
              "16x16 pixels": index.load_images(df, 16)[..., 0].reshape(len(df), -1) / 255.0}
    auc = {}
    for name, x in inputs.items():
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        p = cross_val_predict(model, x, df["label"], groups=df["group"], cv=GroupKFold(5), method="predict_proba")
        auc[name] = roc_auc_score(df["label"], p[:, 1])
    print("held-out ROC-AUC of logistic regressions on the crops:", {k: round(v, 3) for k, v in auc.items()})
    assert 0.7 < auc["features"] < 0.98 and 0.65 < auc["16x16 pixels"] < 0.98, auc


# ---------------------------------------------------------------- command line


def test_cli_index_thyroid_and_make_thyroid_demo(tmp_path, capsys):
    from helpers.__main__ import main

    out = subprocess.run([sys.executable, "-m", "helpers", "index-thyroid", str(tmp_path / "nope")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == f"error: thyroid data directory {tmp_path / 'nope'} does not exist"

    assert main(["make-thyroid-demo", str(tmp_path / "set"), "--profile", "tiny"]) == 2
    assert "unknown profile 'tiny'" in capsys.readouterr().err

    assert main(["make-thyroid-demo", str(tmp_path / "set"), "--seed", "2", "--nodules", "5", "--images", "2"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert (made["nodules"], made["images_per_variant"], made["seed"]) == (5, 10, 2) and made["generated"] is True
    assert main(["index-thyroid", str(tmp_path / "set")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 20 and summary["skipped_total"] == 0
    assert summary["counts"]["uncropped/test"] == made["counts"]["uncropped/test"]
