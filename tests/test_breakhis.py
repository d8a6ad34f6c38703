"""helpers.breakhis: BreakHis names, index, patient splits, model inputs and the generated demo set."""
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import files_under, tree_digest, write_patch
from PIL import Image

from helpers.breakhis import generator, index, track
from helpers.breakhis.generator import make_demo
from helpers.breakhis.index import (COLUMNS, build_index, parse_name, split_by_patient_label, tile_downscale,
                                    to_patches)
from helpers.data.index import DataError
from helpers.data.splits import check_disjoint

# The names of 8 real BreakHis files (4 benign, 4 malignant, 4 magnifications), values read off them by hand.
# The images themselves may not ship (research use only), so the tests draw stand-ins under these names.
REAL = {
    "SOB_B_A-14-22549AB-100-027.png": (0, "benign", "A", "adenosis", "14-22549AB", 100, 27),
    "SOB_B_F-14-14134E-400-001.png": (0, "benign", "F", "fibroadenoma", "14-14134E", 400, 1),
    "SOB_B_PT-14-22704-40-013.png": (0, "benign", "PT", "phyllodes tumor", "14-22704", 40, 13),
    "SOB_B_TA-14-16184-200-025.png": (0, "benign", "TA", "tubular adenoma", "14-16184", 200, 25),
    "SOB_M_DC-14-3909-100-014.png": (1, "malignant", "DC", "ductal carcinoma", "14-3909", 100, 14),
    "SOB_M_LC-14-13412-200-003.png": (1, "malignant", "LC", "lobular carcinoma", "14-13412", 200, 3),
    "SOB_M_MC-14-18842D-200-016.png": (1, "malignant", "MC", "mucinous carcinoma", "14-18842D", 200, 16),
    "SOB_M_PC-14-15704-40-022.png": (1, "malignant", "PC", "papillary carcinoma", "14-15704", 40, 22),
}
FIELDS = ("label", "class", "subtype", "subtype_name", "patient", "magnification", "seq")
# <benign|malignant>/SOB/<subtype folder>/SOB_<B|M>_<code>_<patient>/<N>X/<file>
LAYOUT = re.compile(r"^BreaKHis_v1/histology_slides/breast/(benign|malignant)/SOB/([a-z_]+)/"
                    r"SOB_([BM])_([A-Z]+)_(\d\d-\w+)/(\d+)X/(SOB_.+\.png)$")


@pytest.fixture
def breakhis_sample(tmp_path):
    """The 8 real names on 700x460 stand-ins: pale, H&E-tinted noise (a real file's size and range)."""
    rng = np.random.default_rng(0)
    for name in REAL:
        pixels = rng.normal((215, 170, 200), 20, size=(460, 700, 3)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / name)
    return tmp_path


def official(root, name):
    """Where ``name`` belongs in the official tree under root (spelled out here, not taken from the module)."""
    info = parse_name(name)
    folder = info["subtype_name"].replace(" ", "_")
    patient = f"SOB_{'BM'[info['label']]}_{info['subtype']}_{info['patient']}"
    return Path(root, "BreaKHis_v1/histology_slides/breast", info["class"], "SOB", folder, patient,
                f"{info['magnification']}X", name)


def pngs(root):
    return files_under(root, "*.png")


def digest(root):
    return tree_digest(root, "*.png")


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    """The default demo set (16 patients x 12 images at 230x151) and its index."""
    root = tmp_path_factory.mktemp("breakhis") / "demo"
    summary = make_demo(root)
    df, report = build_index(root)
    return summary, root, df, report


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_names_parse(name):
    assert tuple(parse_name(name)[k] for k in FIELDS) == REAL[name]


def test_parse_accepts_paths_and_roundtrips_through_the_writer():
    info = parse_name(Path("/x/y") / "SOB_M_DC-14-11031-100-003.png")
    assert info["patient"] == "14-11031" and info["magnification"] == 100 and info["seq"] == 3
    assert index.official_path(info) == Path("BreaKHis_v1/histology_slides/breast/malignant/SOB/ductal_carcinoma/"
                                             "SOB_M_DC_14-11031/100X/SOB_M_DC-14-11031-100-003.png")


@pytest.mark.parametrize("name, says", [
    ("notes.png", "does not match"),
    ("SOB_B_A-14-22549AB-40.png", "does not match"),           # no sequence number
    ("SOB_B_A-14-22549AB-40-001.jpg", "does not match"),
    ("SOB_X_A-14-22549AB-40-001.png", "does not match"),       # neither B nor M
    ("SOB_B_XX-14-22549AB-40-001.png", "unknown subtype"),
    ("SOB_M_A-14-22549AB-40-001.png", "adenosis"),             # a benign subtype named malignant
    ("SOB_B_DC-14-22549AB-40-001.png", "malignant"),
    ("SOB_B_A-14-22549AB-50-001.png", "magnification 50"),
])
def test_bad_names_raise_naming_the_name(name, says):
    with pytest.raises(ValueError, match=re.escape(name)) as err:
        parse_name(name)
    assert says in str(err.value)


# ---------------------------------------------------------------- index


def test_sample_with_real_names(breakhis_sample):
    assert sorted(p.name for p in breakhis_sample.iterdir()) == sorted(REAL)
    df, report = build_index(breakhis_sample)
    assert list(df.columns) == COLUMNS
    assert report.files_seen == report.images == len(df) == 8 and report.skipped == {}
    assert report.patients == 8 and report.benign == report.malignant == 4
    assert report.benign_patients == report.malignant_patients == 4
    assert report.by_magnification == {"40X": 2, "100X": 2, "200X": 3, "400X": 1}
    assert report.sizes == {"700x460": 8}
    for _, row in df.iterrows():
        label, cls, code, _, patient, mag, _ = REAL[Path(row["path"]).name]
        assert (row["label"], row["class"], row["subtype"], row["patient"], row["magnification"]) == \
            (label, cls, code, patient, mag)


def test_sample_to_patches(breakhis_sample):
    df, _ = build_index(breakhis_sample)
    whole = to_patches(df, mode="resize")
    assert whole.images.shape == (8, 50, 50, 3) and whole.images.dtype == np.uint8
    tiles = to_patches(df, mode="tiles", tiles_per_image=2)
    assert tiles.images.shape == (16, 50, 50, 3)
    # The stand-ins' range survives the downscaling (pale, as H&E is), and no tile is a flat colour.
    assert 150 < tiles.images.mean() < 240 and tiles.images.reshape(16, -1).std(1).min() > 3


def test_official_tree_and_flat_folder_give_the_same_table(tmp_path):
    names = ["SOB_B_A-14-22549AB-40-001.png", "SOB_B_A-14-22549AB-100-001.png",
             "SOB_M_DC-14-11031-40-001.png"]
    for i, name in enumerate(names):
        write_patch(official(tmp_path / "tree", name), size=(70, 46), colour=(200, 100 + 20 * i, 150))
        write_patch(tmp_path / "flat" / name, size=(70, 46), colour=(200, 100 + 20 * i, 150))
    tree, report = build_index(tmp_path / "tree")
    flat, _ = build_index(tmp_path / "flat")
    assert report.skipped == {} and report.images == 3 and report.patients == 2
    assert report.by_subtype == {"A": 2, "DC": 1} and report.sizes == {"70x46": 3}
    assert tree.drop(columns="path").equals(flat.drop(columns="path"))
    # Sorted by patient, then magnification.
    assert tree["patient"].tolist() == ["14-11031", "14-22549AB", "14-22549AB"]
    assert tree["magnification"].tolist() == [40, 40, 100]


def test_bad_files_are_counted_by_category(tmp_path):
    root = tmp_path / "bh"
    good = write_patch(official(root, "SOB_B_A-14-22549AB-40-001.png"), size=(70, 46))
    write_patch(official(root, "SOB_M_DC-14-11031-40-001.png"), size=(70, 46))
    folder = good.parent  # .../SOB_B_A_14-22549AB/40X
    (folder / "notes.txt").write_text("not an image")                              # not_png
    (folder / "SOB_B_A-14-22549AB-40-002.png").write_bytes(good.read_bytes()[:60])  # truncated: undecodable
    (folder / "SOB_B_A-14-22549AB-40-003.png").write_bytes(b"")                    # empty_file
    Image.new("RGB", (70, 46)).save(folder / "SOB_B_A-14-22549AB-40-004.png", format="JPEG")  # undecodable
    write_patch(folder / "slide-scan.png")                                         # bad_name
    mal = official(root, "SOB_M_DC-14-11031-40-009.png").parent
    write_patch(mal / "SOB_B_A-14-11031-40-005.png")                               # B file, malignant folders
    write_patch(folder.parent / "100X" / "SOB_B_A-14-22549AB-40-006.png")          # 40 file in a 100X folder
    other = folder.parent.parent / "SOB_B_A_14-99999" / "40X"
    write_patch(other / "SOB_B_A-14-22549AB-40-007.png")                            # another patient's folder
    write_patch(root / "benign" / "fibroadenoma" / "SOB_B_A-14-22549AB-40-008.png")  # subtype folder
    # The same file name in three places: the first found is kept (files at the top come first),
    # identical bytes merge, different bytes are reported.
    shutil.copy(good, root / good.name)
    write_patch(root / "copies" / good.name, size=(70, 46), colour=(1, 2, 3))
    (root / ".DS_Store").write_bytes(b"\0")                                        # hidden: not data

    df, report = build_index(root)
    assert report.images == len(df) == 2 and report.patients == 2
    assert report.skipped == {"not_png": 1, "undecodable": 2, "empty_file": 1, "bad_name": 1,
                              "class_mismatch": 1, "magnification_mismatch": 1, "patient_mismatch": 1,
                              "subtype_mismatch": 1, "conflicting_duplicate": 1}
    assert report.duplicates_merged == 1 and report.files_seen == 2 + 9 + 2
    assert report.duplicate_files == [(str(root / good.name), str(good))]
    assert str(root / good.name) in set(df["path"])
    assert {r for _, r, _ in report.skipped_files} == set(report.skipped)
    summary = report.summary(examples=1)
    assert summary["skipped_total"] == 10 and "skipped_files" not in summary
    assert all(len(v) == 1 for v in summary["skipped_examples"].values())
    details = {r: d for _, r, d in report.skipped_files}
    assert "format JPEG" in " ".join(d for _, r, d in report.skipped_files if r == "undecodable")
    assert details["class_mismatch"] == "name says benign, folder malignant"
    assert details["magnification_mismatch"] == "name says 40, folder 100X"
    assert details["patient_mismatch"] == "name says 14-22549AB, folder SOB_B_A_14-99999"
    assert details["subtype_mismatch"] == "name says A, folder fibroadenoma"
    assert summary["duplicate_files"] == [(str(root / good.name), str(good))]


def test_missing_empty_and_useless_directories_raise(tmp_path):
    missing = f"BreakHis directory {tmp_path / 'nope'} does not exist"
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        build_index(tmp_path / "nope")
    (tmp_path / "empty" / "BreaKHis_v1").mkdir(parents=True)  # folders alone are no data
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'empty'} holds no files")):
        build_index(tmp_path / "empty")
    write_patch(tmp_path / "other" / "a.png")
    with pytest.raises(DataError, match="no usable image.*bad_name"):
        build_index(tmp_path / "other")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        build_index(tmp_path / "file")


# ---------------------------------------------------------------- generated demo set


def test_demo_layout_names_and_summary(demo_set):
    summary, root, df, report = demo_set
    rels = pngs(root)
    assert len(rels) == summary["images"] == 16 * 12 == len(df)
    for rel in rels:
        m = LAYOUT.match(rel)
        assert m, rel
        info = parse_name(m[7])
        assert (m[1], m[2], m[3], m[4], m[5], int(m[6])) == (
            info["class"], info["subtype_name"].replace(" ", "_"), "BM"[info["label"]], info["subtype"],
            info["patient"], info["magnification"])
    assert report.skipped == {} and report.sizes == {"230x151": 192}
    for key in ("patients", "images", "benign", "malignant", "benign_patients", "by_magnification",
                "by_subtype"):
        assert summary[key] == getattr(report, key), key
    assert summary["generated"] is True and summary["seed"] == 0 and summary["root"] == str(root)
    assert summary["by_magnification"] == {"40X": 48, "100X": 48, "200X": 48, "400X": 48}
    assert 0.25 <= summary["benign"] / summary["images"] <= 0.37  # BreakHis: 2,480 / 7,909 = 31%
    per_patient = df.groupby("patient")[["label", "subtype"]].nunique()
    assert (per_patient == 1).all().all()  # one class and one subtype per patient
    assert set(df["subtype"]) == set(index.SUBTYPES)  # 16 patients: every subtype at least once
    text = (root / "GENERATED.txt").read_text()
    assert "NOT PATIENT DATA" in text and "no clinical claim" in text and '"seed": 0' in text
    assert sorted(p.name for p in root.iterdir()) == ["BreaKHis_v1", "GENERATED.txt", "generated.json"]
    assert not [p for p in root.parent.iterdir() if "partial" in p.name]


def test_demo_is_deterministic_by_seed(tmp_path):
    args = dict(n_patients=3, images_per_patient=4, size=(80, 53))
    make_demo(tmp_path / "a", seed=5, **args)
    make_demo(tmp_path / "b", seed=5, **args)
    make_demo(tmp_path / "c", seed=6, **args)
    assert len(pngs(tmp_path / "a")) == 12
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert (tmp_path / "a" / "GENERATED.txt").read_bytes() == (tmp_path / "b" / "GENERATED.txt").read_bytes()
    assert digest(tmp_path / "c") != digest(tmp_path / "a")


def test_demo_refuses_a_foreign_folder_and_reuses_its_own(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=re.escape(str(foreign))):
        make_demo(foreign, n_patients=2, images_per_patient=1)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    args = dict(n_patients=2, images_per_patient=2, size=(60, 50))
    summary = make_demo(tmp_path / "set", **args)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "set").rglob("*.png")}
    assert make_demo(tmp_path / "set", **args) == summary  # same arguments: returned as is
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "set").rglob("*.png")} == mtimes
    with pytest.raises(ValueError, match="not a BreakHis demo set made with"):
        make_demo(tmp_path / "set", seed=1, **args)
    (tmp_path / "empty").mkdir()
    assert make_demo(tmp_path / "empty", **args)["images"] == 4


def test_demo_bad_arguments_raise(tmp_path):
    for kwargs in (dict(n_patients=1), dict(images_per_patient=0), dict(size=(40, 26))):
        with pytest.raises(ValueError):
            make_demo(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_interrupted_demo_leaves_nothing(tmp_path, monkeypatch):
    """Stopped after every image was drawn, before the marker and the rename: no half set is left."""
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generator, "BreakHisReport", stop)  # counted after every image was drawn
    with pytest.raises(KeyboardInterrupt):
        make_demo(tmp_path / "set", n_patients=2, images_per_patient=2, size=(60, 50))
    assert list(tmp_path.iterdir()) == []


HE = np.linalg.pinv(np.array([[0.56, 0.72, 0.40], [0.12, 0.84, 0.54]]))  # optical density -> (H, E)


def stain_features(path):
    """Cheap colour statistics: haematoxylin quantiles and area, eosin, spread, white area."""
    a = np.asarray(Image.open(path).reduce(2), np.float32) / 255
    od = -np.log(np.clip(a, 1 / 255, 1))
    h, e = np.moveaxis(od @ HE, -1, 0)
    return np.r_[np.quantile(h, [0.5, 0.9, 0.98]), (h > 0.5).mean(), (h > 0.8).mean(), e.mean(), h.std(),
                 (od.sum(-1) < 0.15).mean()]


def test_demo_is_learnable_but_not_trivial(demo_set):
    """A logistic regression on colour statistics, scored on held-out patients (4 folds by patient),
    beats chance clearly but is far from perfect: no single colour gives the class away."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, _, df, _ = demo_set
    x = np.stack([stain_features(p) for p in df["path"]])
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=500))
    pred = cross_val_predict(model, x, df["label"], groups=df["patient"], cv=GroupKFold(4))
    score = balanced_accuracy_score(df["label"], pred)
    assert 0.62 < score < 0.95, score


def test_demo_nuclei_grow_with_magnification(demo_set):
    """Fine detail (pixel-to-pixel change) falls as the magnification rises: the same tissue, larger."""
    _, _, df, _ = demo_set
    detail = {m: np.mean([np.abs(np.diff(np.asarray(Image.open(p).convert("L"), np.float32), axis=1)).mean()
                          for p in part["path"]]) for m, part in df.groupby("magnification")}
    assert detail[40] > detail[100] > detail[200] > detail[400], detail


# ---------------------------------------------------------------- splits


def test_split_by_patient_keeps_patients_whole_with_both_classes(demo_set):
    _, _, df, _ = demo_set
    out = split_by_patient_label(df, seed=0)
    assert len(out) == len(df) and out["split"].notna().all()
    check_disjoint(out)
    classes = out.groupby("split")["label"].nunique()
    assert classes.to_dict() == {"test": 2, "train": 2, "val": 2}
    patients = out.groupby("split")["patient"].nunique()
    assert patients["train"] > patients["val"] >= 2 and patients["test"] >= 2
    assert split_by_patient_label(df, seed=0)["split"].equals(out["split"])
    assert not split_by_patient_label(df, seed=1)["split"].equals(out["split"])


def test_split_with_few_patients_and_bad_arguments():
    df = pd.DataFrame({"patient": ["a", "b", "c", "d", "e"], "label": [0, 0, 1, 1, 1]})
    out = split_by_patient_label(df, val=0.2, test=0.2)
    check_disjoint(out)
    assert out.groupby("label")["split"].apply(set).to_dict() == {0: {"train", "test"},
                                                                  1: {"train", "val", "test"}}
    assert set(split_by_patient_label(df, val=0, test=0)["split"]) == {"train"}
    for val, test in ((-0.1, 0.2), (0.2, 1.0), (0.5, 0.5)):
        with pytest.raises(ValueError, match="fraction|leave"):
            split_by_patient_label(df, val=val, test=test)
    with pytest.raises(ValueError, match="both labels.*'a'"):
        split_by_patient_label(pd.concat([df, pd.DataFrame({"patient": ["a"], "label": [1]})]))


# ---------------------------------------------------------------- model inputs


def test_to_patches_resize_and_tiles(demo_set):
    _, _, df, _ = demo_set
    part = df.iloc[::8]  # 24 images, all magnifications, both classes
    whole = to_patches(part, mode="resize")
    assert whole.images.shape == (24, 50, 50, 3) and whole.images.dtype == np.uint8
    assert list(whole.source) == list(part.index) and list(whole.patients) == list(part["patient"])

    tiles = to_patches(part, size=32, mode="tiles", tiles_per_image=3, seed=1)
    assert tiles.images.shape == (72, 32, 32, 3) and tiles.images.dtype == np.uint8
    assert 0 <= tiles.images.min() and tiles.images.max() <= 255 and tiles.images.std() > 10
    assert (tiles.labels == df.loc[tiles.source, "label"].to_numpy()).all()
    assert (tiles.patients == df.loc[tiles.source, "patient"].to_numpy()).all()
    for seed, same in ((1, True), (2, False)):
        again = to_patches(part, size=32, mode="tiles", tiles_per_image=3, seed=seed)
        assert np.array_equal(again.images, tiles.images) == same, seed
    # Splits carry over: every patch of a patient lands in its patient's split.
    split = split_by_patient_label(df).loc[tiles.source, "split"]
    assert pd.Series(split.to_numpy()).groupby(tiles.patients).nunique().max() == 1


def test_to_patches_bad_input_raises(demo_set, tmp_path):
    _, _, df, _ = demo_set
    with pytest.raises(ValueError, match="'crop'"):
        to_patches(df.head(2), mode="crop")
    with pytest.raises(ValueError, match="positive"):
        to_patches(df.head(2), mode="tiles", tiles_per_image=0)
    with pytest.raises(ValueError, match="empty"):
        to_patches(df.head(0))
    with pytest.raises(ValueError, match="smaller than a 200-px tile"):
        to_patches(df.head(1), size=200, mode="tiles")
    broken = df.head(1).assign(path=str(tmp_path / "gone.png"))
    with pytest.raises((ValueError, OSError), match="gone.png"):
        to_patches(broken)


def test_tile_downscale_aims_at_the_idc_scale():
    assert tile_downscale(40) == pytest.approx(2.55, abs=0.01)   # 1.57 -> 4 um per pixel
    assert tile_downscale(100) == pytest.approx(6.37, abs=0.01)
    assert tile_downscale(400) == pytest.approx(460 / 50)        # capped: one 50-px tile must fit
    assert tile_downscale(40, width=230, height=151) == 1.0     # never upscale the small demo images


# ---------------------------------------------------------------- where the data are, tables, figures


def test_demo_dir_follows_idc_demo_root_and_is_made_once(tmp_path, monkeypatch):
    monkeypatch.setenv("IDC_DEMO_ROOT", str(tmp_path))
    monkeypatch.setitem(generator.DEMO_SIZES, "smoke", (3, 2))
    assert generator.demo_dir(3) == tmp_path / "breakhis-3p"
    root = generator.resolve_dir(None, "smoke")
    assert root == tmp_path / "breakhis-3p" and len(pngs(root)) == 6
    assert index.data_label(root) == "generated BreakHis-like demo data"
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    assert generator.resolve_dir("", "smoke") == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == mtimes  # not drawn again
    assert generator.resolve_dir(root) == root and index.data_label(tmp_path) == f"real BreakHis: {tmp_path.name}"
    with pytest.raises(FileNotFoundError, match="nope"):
        generator.resolve_dir(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown profile"):
        generator.resolve_dir(None, "huge")


def test_counts_and_scale_tables(demo_set):
    _, _, df, _ = demo_set
    counts = index.counts_table(df)
    total = counts.iloc[-1]
    assert total["class"] == "all" and total["images"] == len(df) == 192 and total["patients"] == 16
    assert total["real BreakHis patients"] == 82 and total["real BreakHis images"] == 7909
    assert counts[[f"{m}X" for m in index.MAGNIFICATIONS]].iloc[:-1].sum().sum() == len(df)
    scale = index.scale_table(df.assign(width=700, height=460))
    assert scale.loc["BreakHis 40X (700x460 px)", "tiles: µm/px"] == pytest.approx(4.0)  # IDC's scale
    assert scale.loc["IDC patch (Kaggle)", "tile of 50 px (µm)"] == 200


def test_example_grid_and_patch_modes_figures(demo_set):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    _, _, df, _ = demo_set
    fig = index.example_grid(df, "generated BreakHis-like demo data")
    assert isinstance(fig, Figure) and len(fig.axes) == 8 * 4
    assert "generated" in fig._suptitle.get_text()
    small = index.example_grid(df.groupby("subtype").head(1), "three images")  # mostly empty: a gallery
    assert len([ax for ax in small.axes if ax.images]) == 8
    modes = index.patch_modes_figure(df, "demo", tiles=2)
    assert isinstance(modes, Figure) and len(modes.axes) == (2 + 2) * 4
    assert "µm/px" in modes.axes[0].get_title()
    plt.close("all")


# ---------------------------------------------------------------- pretraining


@pytest.fixture(scope="module")
def tiny_breakhis(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "bh"
    make_demo(root, n_patients=10, images_per_patient=2, size=(100, 66), seed=1)
    return root


@pytest.mark.slow
def test_pretrain_trains_once_then_loads(tiny_breakhis, tmp_path, monkeypatch):
    from helpers import models, train
    from helpers.data import source

    cfg = source.resolve("smoke", data_dir=tiny_breakhis, output_dir=tmp_path, epochs=1, batch_size=16,
                         make_demo=False)
    first = track.pretrain(cfg, tiny_breakhis, "cancernet", tiles_per_image=2)
    assert first.trained and first.path.is_file() and first.path.parent == tmp_path / "models"
    assert first.path.name.startswith("breakhis_cancernet_smoke_") and first.path.suffix == ".keras"
    assert set(first.patches) == {"train", "val", "test"} and first.generated
    assert list(first.scores_table().index) == ["validation", "test"] and len(first.history) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")
    monkeypatch.setattr(train, "fit", no_training)
    again = track.pretrain(cfg, tiny_breakhis, "cancernet", tiles_per_image=2)
    assert not again.trained and again.path == first.path
    assert (again.val, again.test, again.threshold) == (first.val, first.test, first.threshold)
    with pytest.raises(AssertionError, match="trained again"):  # other settings: another model
        track.pretrain(cfg, tiny_breakhis, "cancernet", tiles_per_image=3)

    # The IDC model starts from it: every layer with weights holds the pretrained values.
    model = models.build_model("cancernet", weights=str(first.path), fine_tune_at=5)
    saved = models.keras.models.load_model(first.path)
    conv = "block1_sepconv1"
    assert all(np.array_equal(a, b) for a, b in zip(model.get_layer(conv).get_weights(),
                                                    saved.get_layer(conv).get_weights()))
    assert not model.get_layer(conv).trainable and model.get_layer("block2_sepconv1").trainable


def test_pretrain_needs_patients_for_validation(tmp_path):
    from helpers.data import source

    make_demo(tmp_path / "bh", n_patients=2, images_per_patient=1, size=(60, 50))
    cfg = source.resolve("smoke", data_dir=tmp_path / "bh", output_dir=tmp_path / "out", make_demo=False)
    with pytest.raises(ValueError, match="no patient left for the val split"):
        track.pretrain(cfg, tmp_path / "bh")
    with pytest.raises(FileNotFoundError, match="nope"):
        track.pretrain(cfg, tmp_path / "nope")


def test_fine_tune_arms_differ_only_in_where_the_weights_start(tmp_path):
    from helpers.reference import ORIGINAL_FINE_TUNE_AT

    arms = track.fine_tune_arms("cancernet", tmp_path / "bh.keras")
    assert arms == {"scratch": {}, "breakhis": {"weights": str(tmp_path / "bh.keras"),
                                                "fine_tune_at": ORIGINAL_FINE_TUNE_AT["cancernet"]}}
    backbone = track.fine_tune_arms("mobilenet_v2", "bh.keras", fine_tune_at=7, imagenet=True)
    assert list(backbone) == ["scratch", "breakhis", "imagenet"]
    assert backbone["imagenet"] == {"weights": "imagenet", "fine_tune_at": 7}
    with pytest.raises(ValueError, match="'cancernet' has no ImageNet weights"):
        track.fine_tune_arms("cancernet", "bh.keras", imagenet=True)


def test_beside_original_and_verdict():
    from helpers import config

    cfg = config.Config(profile="smoke", data_dir=Path("/d"), output_dir=Path("/o"), generated=True, epochs=2,
                        batch_size=64, sample_size=None, weights=None, seed=42, demo_patients=40,
                        seeds=1)
    runs = pd.DataFrame({"variant": ["scratch", "breakhis"], "model": "cancernet", "scored_on": "test",
                         "accuracy": [0.8, 0.9], "f1": [0.7, 0.75], "val_f1": [0.70, 0.76]})
    table = track.beside_original("cancernet", runs, cfg, "by patient")
    assert list(table["split"][:2]) == ["random patches"] * 2  # the seed project's two CancerNet rows first
    assert table["test"].iloc[-1] == 0.9 and table["split"].iloc[-1] == "test split, by patient"
    summary = runs.set_index("variant")
    assert track.verdict(summary, "demo").startswith(
        "Starting from 'breakhis' rather than 'scratch' helps here: validation F1 0.760 against 0.700")
    close = summary.assign(val_f1=[0.70, 0.71])
    assert "makes no clear difference" in track.verdict(close, "demo")
    with pytest.raises(ValueError, match="no variant 'imagenet'"):
        track.verdict(summary, "demo", arm="imagenet")
