"""Train / validation / test splits by patient, never by patch: patches of one patient are
near-duplicates (neighbouring tiles of one slide), so a patch split shows the model its test patients
and inflates every metric. Each function returns the index with a ``split`` column; ``split_index``
chooses the split a run asked for and says which in a note.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

SPLITS = ("train", "val", "test")


def _check_fractions(val, test, what, zero_allowed):
    """ValueError unless each fraction is in [0, 1) (``zero_allowed``) or (0, 1), leaving some ``what``."""
    for name, frac in (("val", val), ("test", test)):
        if not (0 <= frac < 1 if zero_allowed else 0 < frac < 1):
            raise ValueError(f"{name} fraction must be in {'[' if zero_allowed else '('}0, 1), got {frac}")
    if val + test >= 1:
        raise ValueError(f"val + test must leave {what} for training, got {val} + {test}")


def split_by_patient(df: pd.DataFrame, val: float = 0.15, test: float = 0.15,
                     seed: int = 0, hold_out=()) -> pd.DataFrame:
    """Assign whole patients to train/val/test, each split's IDC share near the whole set's.

    ``StratifiedGroupKFold`` balances: test is one of ``round(1/test)`` folds, validation one fold of
    the rest (the fractions are met to the nearest fold). ``hold_out`` patients go to test on top of
    that (e.g. the complete slides a slide map needs).
    """
    hold_out = [str(p) for p in hold_out]
    if hold_out:
        missing = sorted(set(hold_out) - set(df["patient"]))
        if missing:
            raise ValueError(f"patients to hold out are not in the data: {missing}")
        held = df["patient"].isin(hold_out)
        rest = split_by_patient(df[~held], val=val, test=test, seed=seed)
        return pd.concat([rest, df[held].assign(split="test")]).loc[df.index]
    _check_fractions(val, test, "patients", zero_allowed=True)
    patients = df["patient"].nunique()
    if patients < 3 and (val and test):
        raise ValueError(f"a three-way split by patient needs at least 3 patients, got {patients}")

    out = df.assign(split="train")
    rest = out.index
    for name, frac in (("test", test), ("val", val / (1 - test))):
        if frac == 0:
            continue
        part = out.loc[rest]
        n_folds = min(max(2, round(1 / frac)), part["patient"].nunique())
        folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        _, held = next(folds.split(part, part["label"], groups=part["patient"]))
        out.loc[part.index[held], "split"] = name
        rest = part.index.difference(part.index[held])
    return out


def split_by_patch(df: pd.DataFrame, val: float = 0.15, test: float = 0.15, seed: int = 0) -> pd.DataFrame:
    """The leaky split the seed projects used: patches drawn at random (stratified by label),
    so most patients have patches on every side. Only for measuring how much it flatters."""
    _check_fractions(val, test, "patches", zero_allowed=False)
    out = df.assign(split="train")
    rest, held = train_test_split(out.index, test_size=test, stratify=out["label"], random_state=seed)
    out.loc[held, "split"] = "test"
    _, held = train_test_split(rest, test_size=val / (1 - test), stratify=out.loc[rest, "label"],
                               random_state=seed)
    out.loc[held, "split"] = "val"
    return out


def shared_patients(df: pd.DataFrame, side: str = "test") -> int:
    """How many patients of ``side`` also have patches in the training split (0 for a patient split)."""
    return len(set(df.loc[df["split"] == side, "patient"]) & set(df.loc[df["split"] == "train", "patient"]))


def read_patient_list(path) -> list[str]:
    """Patient ids, one per line (blank lines and ``#`` comments ignored)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"patient list {path} does not exist")
    return [i for line in Path(path).read_text().splitlines() if (i := line.split("#")[0].strip())]


def split_from_lists(df: pd.DataFrame, lists: dict) -> tuple[pd.DataFrame, dict]:
    """Assign splits from patient-id list files, e.g. ``{"train": "cases_train.txt", ...}``: the index
    (patients on no list dropped) and a report of list patients missing and index patients on no list."""
    ids = {name: read_patient_list(path) for name, path in lists.items()}
    owner = {}
    for name, patients in ids.items():
        for pid in patients:
            if owner.setdefault(pid, name) != name:
                raise ValueError(f"patient {pid} is on both the {owner[pid]} and {name} lists")
    present = set(df["patient"])
    report = {"missing_from_data": {name: sorted(set(p) - present) for name, p in ids.items()},
              "not_on_any_list": sorted(present - set(owner))}
    return df[df["patient"].isin(owner)].assign(split=lambda d: d["patient"].map(owner)), report


def split_index(df: pd.DataFrame, seed: int, split_dir=None, by: str = "patient",
                hold_out=()) -> tuple[pd.DataFrame, str]:
    """Patients to train/val/test: from list files in ``split_dir`` if given, else 70/15/15
    (``hold_out`` patients to test on top). ``by="patch"`` draws patches at random instead
    (the seed projects' leaky split)."""
    if by == "patch":
        if split_dir:
            raise ValueError("a patch split draws patches at random: it takes no split_dir")
        return split_by_patch(df, seed=seed), f"by patch (random, leaky), 70/15/15, seed {seed}"
    if by != "patient":
        raise ValueError(f"a split is by 'patient' or by 'patch', not {by!r}")
    if split_dir:
        folder = Path(split_dir)
        lists = {n: folder / f"cases_{n}.txt" for n in SPLITS if (folder / f"cases_{n}.txt").is_file()}
        if "train" not in lists or "val" not in lists:
            raise FileNotFoundError(f"{split_dir} needs cases_train.txt and cases_val.txt")
        out, report = split_from_lists(df, lists)
        missing = {k: len(v) for k, v in report["missing_from_data"].items() if v}
        note = f"by patient, from the lists in {folder.name}"
        return out, note + (f" (listed but absent: {missing})" if missing else "")
    note = f"by patient, 70/15/15, seed {seed}" + (f", {', '.join(map(str, hold_out))} held out for test"
                                                    if len(hold_out) else "")
    return split_by_patient(df, seed=seed, hold_out=hold_out), note


def sample(df: pd.DataFrame, max_patches: int | None = None, balanced: bool = False,
           seed: int = 0) -> pd.DataFrame:
    """A subset of patches within each split (no patient changes side): ``max_patches`` caps the total,
    shared in proportion to the splits' sizes (:func:`_shares`); ``balanced`` draws as many IDC-negative
    as positive patches per split (the seed projects trained on ~5,500 such patches)."""
    if max_patches is not None and max_patches < 2:
        raise ValueError(f"max_patches must be at least 2, got {max_patches}")
    rng = np.random.default_rng(seed)
    groups = list(df.groupby("split", sort=False)) if "split" in df else [(None, df)]
    sizes = np.array([len(part) for _, part in groups])
    caps = sizes if max_patches is None else _shares(sizes, max_patches)
    parts = []
    for (_, part), cap in zip(groups, caps):
        if balanced:
            counts = part["label"].value_counts()
            per_class = min(cap // 2, counts.get(0, 0), counts.get(1, 0))
            parts += [_pick(part[part["label"] == c], per_class, rng) for c in (0, 1)]
        else:
            parts.append(_pick(part, cap, rng))
    return pd.concat(parts).sort_index()


def _shares(sizes: np.ndarray, cap: int) -> np.ndarray:
    """``cap`` patches shared among splits of ``sizes``: each its proportional share rounded, at least 2
    (or all it has); where that would pass ``cap``, the shares most above their exact value give one back."""
    if cap >= sizes.sum():
        return sizes
    least = np.minimum(2, sizes)
    if least.sum() > cap:
        raise ValueError(f"max_patches {cap} cannot give each of the {len(sizes)} splits 2 patches; "
                         f"give at least {least.sum()}")
    exact = cap * sizes / sizes.sum()
    shares = np.maximum(least, np.round(exact)).astype(int)
    while shares.sum() > cap:
        shares[np.argmax(np.where(shares > least, shares - exact, -np.inf))] -= 1
    return shares


def _pick(part: pd.DataFrame, n: int, rng) -> pd.DataFrame:
    return part if n >= len(part) else part.iloc[np.sort(rng.choice(len(part), size=n, replace=False))]


SUBSETS = ("patches", "patients")


def training_subset(patients, share: float, by: str = "patches", seed: int = 0) -> np.ndarray:
    """The sorted positions of ``share`` of a training split's patches, for a learning curve:
    ``by="patches"`` keeps every patient and ``share`` of each one's patches (at least one),
    ``by="patients"`` ``share`` of the patients (at least one) with all their patches. For one
    ``seed`` a smaller share keeps a subset of a larger one's."""
    patients = np.asarray(patients)
    if not 0 < share <= 1:
        raise ValueError(f"the training share must be in (0, 1], got {share}")
    if by not in SUBSETS:
        raise ValueError(f"a training subset is drawn by {' or '.join(SUBSETS)}, not {by!r}")
    if share == 1:
        return np.arange(len(patients))
    rng = np.random.default_rng(seed)
    if by == "patients":
        names = np.unique(patients)
        chosen = names[rng.permutation(len(names))[: max(1, round(share * len(names)))]]
        return np.flatnonzero(np.isin(patients, chosen))
    draw = pd.Series(rng.permutation(len(patients)))  # one draw for all shares: they nest
    within = draw.groupby(patients).rank(method="first").to_numpy()  # 1: drawn first of its patient
    size = draw.groupby(patients).transform("size").to_numpy()
    return np.flatnonzero(within <= np.maximum(1, np.round(share * size)))


def describe(df: pd.DataFrame) -> pd.DataFrame:
    """Patients, patches and IDC share per split: the table to print under every split."""
    table = df.groupby("split").agg(patients=("patient", "nunique"), patches=("label", "size"),
                                    positives=("label", "sum"))
    table["positive_share"] = (table["positives"] / table["patches"]).round(3)
    order = [s for s in SPLITS if s in table.index] + [s for s in table.index if s not in SPLITS]
    return table.loc[order]


def split_counts(df: pd.DataFrame) -> dict:
    """``describe`` as ``{split: {"patients", "patches", "positives", "positive_share"}}``, for model.json."""
    return {name: {k: int(v) if k != "positive_share" else float(v) for k, v in row.items()}
            for name, row in describe(df).iterrows()}


def counts_table(df: pd.DataFrame) -> str:
    """``splits.describe`` as text, with a total row: printed before training and scoring."""
    table = describe(df)
    total = table[["patients", "patches", "positives"]].sum()  # splits share no patient
    table.loc["total"] = [*total, round(total["positives"] / max(1, total["patches"]), 3)]
    return table.astype({c: int for c in ("patients", "patches", "positives")}).to_string()


def used_patches_line(used: int, available: int, data_dir, why: str = "") -> str:
    """One line saying whether every usable patch of ``data_dir`` is used and, if not, why."""
    if used == available:
        return f"using all {available:,} usable patches of {data_dir}" + (f" ({why})" if why else "")
    return f"using {used:,} of the {available:,} usable patches of {data_dir}: {why}"


def check_cap(cap) -> None:
    """A cap on patches is None or 0 (every patch) or at least 2 (one per side of a split)."""
    if cap is not None and cap != 0 and cap < 2:
        raise ValueError(f"the patch cap must be 0 (all) or at least 2, got {cap}")


def check_classes(df: pd.DataFrame, note: str = "") -> list[str]:
    """ValueError naming the split if training or validation is empty or of one class only; for a test
    split of one class, a warning line to print (its F1 and balanced accuracy are undefined)."""
    where = f" ({note})" if note else ""
    for name in SPLITS:
        labels = df.loc[df["split"] == name, "label"]
        if labels.empty and name != "test":
            raise ValueError(f"the {name} split is empty{where}; check the data or the lists")
        if len(labels) and labels.nunique() < 2:
            only = "IDC-positive" if labels.iloc[0] == 1 else "IDC-negative"
            if name == "test":
                return [f"warning: the test split holds only {only} patches{where}: its F1, balanced "
                        "accuracy and ROC-AUC are undefined"]
            patients = df.loc[labels.index, "patient"].nunique()
            raise ValueError(f"the {name} split holds only {only} patches ({len(labels)} from {patients} "
                             f"patient(s)){where}: it needs both classes; use more patients or other lists")
    return []


def check_disjoint(df: pd.DataFrame) -> None:
    """Raise if any patient appears in more than one split."""
    leaked = df.groupby("patient")["split"].nunique().loc[lambda n: n > 1]
    if len(leaked):
        raise AssertionError(f"patients in more than one split: {list(leaked.index[:10])}")
