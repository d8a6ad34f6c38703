import numpy as np
import pandas as pd
import pytest

from helpers.data import splits
from helpers.data.splits import training_subset


def make_index(n_patients=40, seed=0):
    """Patients of 10-200 patches with IDC shares from 0 to 1."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        n = int(rng.integers(10, 200))
        share = rng.uniform(0, 1)
        labels = (rng.uniform(size=n) < share).astype(int)
        rows += [{"path": f"{p}/{i}.png", "patient": str(1000 + p), "x": i, "y": 0, "label": y}
                 for i, y in enumerate(labels)]
    return pd.DataFrame(rows)


def test_no_patient_in_two_splits_and_all_patches_kept():
    df = make_index()
    out = splits.split_by_patient(df, val=0.15, test=0.15, seed=1)
    assert len(out) == len(df)
    assert (out.groupby("patient")["split"].nunique() == 1).all()
    splits.check_disjoint(out)
    assert set(out["split"]) == {"train", "val", "test"}


def test_split_fractions_and_positive_share_are_near_the_whole():
    df = make_index(n_patients=120)
    out = splits.split_by_patient(df, val=0.15, test=0.15, seed=3)
    table = splits.describe(out)
    whole = df["label"].mean()
    assert (abs(table["positive_share"] - whole) < 0.06).all(), table
    share = table["patches"] / table["patches"].sum()
    assert 0.6 < share["train"] < 0.8 and 0.08 < share["test"] < 0.24 and 0.08 < share["val"] < 0.24


def test_same_seed_same_split_other_seed_other_split():
    df = make_index()
    a = splits.split_by_patient(df, seed=7)["split"]
    b = splits.split_by_patient(df, seed=7)["split"]
    c = splits.split_by_patient(df, seed=8)["split"]
    assert a.equals(b) and not a.equals(c)


def test_check_disjoint_catches_a_leak():
    df = make_index(5)
    df["split"] = "train"
    df.loc[df.index[0], "split"] = "test"
    with pytest.raises(AssertionError, match=df.loc[df.index[0], "patient"]):
        splits.check_disjoint(df)


@pytest.mark.parametrize("val,test", [(-0.1, 0.2), (0.5, 0.5), (0.2, 1.0)])
def test_bad_fractions_raise(val, test):
    with pytest.raises(ValueError, match="fraction|leave patients"):
        splits.split_by_patient(make_index(), val=val, test=test)


def test_lists_assign_splits_and_report_missing(tmp_path):
    df = make_index(6)
    (tmp_path / "train.txt").write_text("1000\n1001\n# a comment\n1002\n\n")
    (tmp_path / "test.txt").write_text("1003\n9999")
    out, report = splits.split_from_lists(df, {"train": tmp_path / "train.txt",
                                               "test": tmp_path / "test.txt"})
    assert sorted(out[out.split == "train"]["patient"].unique()) == ["1000", "1001", "1002"]
    assert list(out[out.split == "test"]["patient"].unique()) == ["1003"]
    assert report["missing_from_data"] == {"train": [], "test": ["9999"]}
    assert report["not_on_any_list"] == ["1004", "1005"]
    splits.check_disjoint(out)


def test_a_patient_on_two_lists_raises(tmp_path):
    (tmp_path / "a.txt").write_text("1000\n")
    (tmp_path / "b.txt").write_text("1000\n")
    with pytest.raises(ValueError, match="1000"):
        splits.split_from_lists(make_index(3), {"train": tmp_path / "a.txt", "val": tmp_path / "b.txt"})
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        splits.read_patient_list(tmp_path / "nope.txt")


def test_split_index_reads_a_split_folder_or_splits_by_patient_or_by_patch(tmp_path):
    df = make_index(8)
    (tmp_path / "cases_train.txt").write_text("1000\n1001\n1002\n1003\n")
    (tmp_path / "cases_val.txt").write_text("1004\n9999\n")
    (tmp_path / "cases_test.txt").write_text("1005\n")
    out, note = splits.split_index(df, seed=1, split_dir=tmp_path)
    assert note == f"by patient, from the lists in {tmp_path.name} (listed but absent: {{'val': 1}})"
    assert out.groupby("split")["patient"].nunique().to_dict() == {"train": 4, "val": 1, "test": 1}
    assert len(out) == (df["patient"] <= "1005").sum()  # patients on no list are dropped

    out, note = splits.split_index(df, seed=1, hold_out=["1007"])
    assert note == "by patient, 70/15/15, seed 1, 1007 held out for test"
    assert len(out) == len(df) and set(out.loc[out["patient"] == "1007", "split"]) == {"test"}
    splits.check_disjoint(out)
    out, note = splits.split_index(df, seed=1, by="patch")
    assert note == "by patch (random, leaky), 70/15/15, seed 1" and splits.shared_patients(out) > 0


def test_split_index_refuses_a_split_it_cannot_make(tmp_path):
    with pytest.raises(ValueError, match="it takes no split_dir"):
        splits.split_index(make_index(4), seed=0, split_dir=tmp_path, by="patch")
    with pytest.raises(ValueError, match="not 'slide'"):
        splits.split_index(make_index(4), seed=0, by="slide")
    (tmp_path / "cases_train.txt").write_text("1000\n")
    with pytest.raises(FileNotFoundError, match="needs cases_train.txt and cases_val.txt"):
        splits.split_index(make_index(4), seed=0, split_dir=tmp_path)


def test_balanced_sample_keeps_patients_on_their_side():
    df = splits.split_by_patient(make_index(60), seed=0)
    owner = df.groupby("patient")["split"].first()
    sub = splits.sample(df, max_patches=600, balanced=True, seed=0)
    assert (sub["patient"].map(owner) == sub["split"]).all()
    per_split = sub.groupby(["split", "label"]).size().unstack()
    assert (per_split[0] == per_split[1]).all()
    assert 500 <= len(sub) <= 600
    assert not sub.index.duplicated().any() and sub.index.isin(df.index).all()


def test_size_limited_sample_is_reproducible_and_capped():
    df = splits.split_by_patient(make_index(60), seed=0)
    a = splits.sample(df, max_patches=1000, seed=4)
    b = splits.sample(df, max_patches=1000, seed=4)
    assert a.index.equals(b.index)
    assert abs(len(a) - 1000) <= 3
    assert splits.sample(df).index.equals(df.index)
    with pytest.raises(ValueError, match="max_patches"):
        splits.sample(df, max_patches=1)


def test_a_capped_sample_never_passes_the_cap_and_keeps_each_splits_share():
    # 7, 7 and 6 patches: a cap of 10 gives shares 3.5, 3.5 and 3, which round to 4 + 4 + 3 = 11
    df = pd.DataFrame({"patient": [str(i) for i in range(20)], "label": [i % 2 for i in range(20)],
                       "split": ["train"] * 7 + ["val"] * 7 + ["test"] * 6})
    sub = splits.sample(df, max_patches=10, seed=0)
    assert len(sub) == 10
    assert sub["split"].value_counts().to_dict() == {"train": 3, "val": 4, "test": 3}
    whole = splits.split_by_patient(make_index(30), seed=2)
    sizes = whole["split"].value_counts()
    for cap in range(20, len(whole), 37):  # from 20 on, no split is held up to its 2 patches
        counts = splits.sample(whole, max_patches=cap, seed=cap)["split"].value_counts()
        assert counts.sum() <= cap and counts.min() >= 2, (cap, counts)
        assert (abs(counts - cap * sizes / len(whole)) < 2).all(), (cap, counts)
    with pytest.raises(ValueError, match="cannot give each of the 3 splits 2 patches; give at least 6"):
        splits.sample(df, max_patches=5)


PATIENTS = np.array(list("aaaabbbbbbbbcc"))  # 4, 8 and 2 patches


def test_a_share_of_patches_keeps_every_patient_and_that_share_of_each():
    kept = training_subset(PATIENTS, 0.5, "patches", seed=1)
    counts = pd.Series(PATIENTS[kept]).value_counts().to_dict()
    assert counts == {"a": 2, "b": 4, "c": 1}
    assert list(kept) == sorted(kept) and len(set(kept)) == len(kept)
    # a quarter of c's 2 patches rounds to none: one is kept, so no patient drops out
    assert pd.Series(PATIENTS[training_subset(PATIENTS, 0.25, "patches", seed=1)]).value_counts().to_dict() == \
        {"a": 1, "b": 2, "c": 1}


def test_a_share_of_patients_keeps_whole_patients():
    kept = training_subset(PATIENTS, 0.34, "patients", seed=3)  # 1 of 3 patients
    names = set(PATIENTS[kept])
    assert len(names) == 1 and len(kept) == (PATIENTS == names.pop()).sum()
    assert len(set(PATIENTS[training_subset(PATIENTS, 0.67, "patients", seed=3)])) == 2


@pytest.mark.parametrize("by", ["patches", "patients"])
def test_smaller_shares_nest_in_larger_ones_for_one_seed(by):
    patients = np.repeat([f"p{i}" for i in range(20)], 10)
    small, large = (set(training_subset(patients, s, by, seed=5)) for s in (0.25, 0.5))
    assert small < large
    assert set(training_subset(patients, 0.25, by, seed=6)) != small  # another seed, another draw
    assert list(training_subset(patients, 1.0, by, seed=5)) == list(range(200))


def test_a_bad_share_or_way_is_named():
    with pytest.raises(ValueError, match="share must be in \\(0, 1\\], got 0"):
        training_subset(PATIENTS, 0, "patches")
    with pytest.raises(ValueError, match="share must be in \\(0, 1\\], got 1.5"):
        training_subset(PATIENTS, 1.5, "patches")
    with pytest.raises(ValueError, match="'slides'"):
        training_subset(PATIENTS, 0.5, "slides")


def test_a_patch_split_puts_patients_on_every_side_and_keeps_the_class_share():
    df = make_index()
    out = splits.split_by_patch(df, val=0.15, test=0.15, seed=1)
    assert len(out) == len(df) and out.index.equals(df.index)
    sizes = out["split"].value_counts()
    assert sizes["test"] == round(0.15 * len(df)) or abs(sizes["test"] - 0.15 * len(df)) <= 1
    assert abs(sizes["val"] - 0.15 * len(df)) <= 1
    for side in ("val", "test"):  # stratified: each side's IDC share within one patch of the whole's
        part = out[out["split"] == side]
        assert abs(part["label"].sum() - df["label"].mean() * len(part)) <= 1
    # nearly every test patient also trained: the leak a patient split prevents
    test_patients = out.loc[out["split"] == "test", "patient"].nunique()
    assert splits.shared_patients(out, "test") >= 0.9 * test_patients
    assert splits.shared_patients(splits.split_by_patient(df, seed=1), "test") == 0
    pd.testing.assert_frame_equal(out, splits.split_by_patch(df, seed=1))
    assert not out["split"].equals(splits.split_by_patch(df, seed=2)["split"])


def test_shared_patients_counts_exactly():
    df = pd.DataFrame({"patient": ["a", "a", "b", "b", "c"], "label": 0,
                       "split": ["train", "test", "train", "val", "test"]})
    assert splits.shared_patients(df, "test") == 1 and splits.shared_patients(df, "val") == 1


@pytest.mark.parametrize("val, test", [(0, 0.2), (0.5, 0.5), (0.2, 1.2)])
def test_a_patch_split_refuses_bad_fractions(val, test):
    with pytest.raises(ValueError, match="fraction|leave patches"):
        splits.split_by_patch(make_index(5), val=val, test=test)


def test_held_out_patients_go_to_test_and_the_rest_split_as_usual():
    df = make_index()
    held = ["1003", "1017"]
    out = splits.split_by_patient(df, seed=1, hold_out=held)
    assert out.index.equals(df.index) and len(out) == len(df)
    assert set(out.loc[out["patient"].isin(held), "split"]) == {"test"}
    rest = splits.split_by_patient(df[~df["patient"].isin(held)], seed=1)
    pd.testing.assert_series_equal(out.loc[rest.index, "split"], rest["split"])
    splits.check_disjoint(out)
    with pytest.raises(ValueError, match=r"not in the data: \['999'\]"):
        splits.split_by_patient(df, hold_out=["1003", "999"])


def test_a_split_with_one_class_is_refused_for_training_and_validation_and_warned_for_test():
    df = pd.DataFrame({"patient": list("aabbccdd"), "label": [0, 1, 0, 0, 0, 1, 1, 1],
                       "split": ["train"] * 2 + ["val"] * 2 + ["test"] * 2 + ["test"] * 2})
    with pytest.raises(ValueError, match=r"the val split holds only IDC-negative patches \(2 from 1 patient\(s\)\) \(x\)"):
        splits.check_classes(df, "x")
    df.loc[2, "label"] = 1
    assert splits.check_classes(df) == []
    df.loc[df["split"] == "test", "label"] = 0
    assert splits.check_classes(df, "x") == [
        "warning: the test split holds only IDC-negative patches (x): its F1, balanced accuracy and ROC-AUC are undefined"]
    with pytest.raises(ValueError, match="the train split is empty"):
        splits.check_classes(df[df["split"] != "train"])
    with pytest.raises(ValueError, match="the train split holds only IDC-positive"):
        splits.check_classes(df.assign(label=df["label"].where(df["split"] != "train", 1)))
