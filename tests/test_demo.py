"""helpers.data.demo: the generated IDC-like demo set (generated images, not patient data)."""
import hashlib
import os
import re
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from helpers.data import demo
from helpers.data.demo import make_demo

NAME = re.compile(r"^(\d+)_idx5_x(\d+)_y(\d+)_class([01])\.png$")
SUMMARY_KEYS = {"root", "patients", "patches", "positives", "negatives", "small_patches", "seed", "generated"}


def scan(root):
    """One row per PNG under root: (patient, label, x, y, width, height, mode, relative path)."""
    rows = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".png"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)
            m = NAME.match(f)
            assert m, f"bad file name {rel}"
            parts = rel.split(os.sep)
            assert len(parts) == 3, f"not <patient>/<label>/<file>: {rel}"
            assert parts[0] == m[1] and parts[1] == m[4], f"folders disagree with the name: {rel}"
            with Image.open(path) as im:
                rows.append((m[1], int(m[4]), int(m[2]), int(m[3]), im.width, im.height, im.mode, rel))
    return sorted(rows, key=lambda r: r[-1])


def digest(root):
    h = hashlib.sha256()
    for row in scan(root):
        h.update(row[-1].encode())
        with open(os.path.join(root, row[-1]), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "six"
    return make_demo(root, n_patients=6, seed=0), root


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "default"
    return make_demo(root), root


def test_layout_names_and_summary(small):
    summary, root = small
    rows = scan(root)
    assert set(summary) == SUMMARY_KEYS
    assert summary["generated"] is True and summary["seed"] == 0 and summary["root"] == str(root)
    # Pinned: the layout (counts, labels, border cuts) depends on numpy's seeded streams only.
    counts = [summary[k] for k in ("patients", "patches", "positives", "small_patches")]
    assert counts == [6, 472, 150, 6]
    assert summary["patches"] == len(rows)
    assert summary["positives"] == sum(r[1] for r in rows)
    assert summary["negatives"] == sum(1 - r[1] for r in rows)
    assert summary["small_patches"] == sum((r[4], r[5]) != (50, 50) for r in rows)
    assert sorted({r[0] for r in rows}) == [str(90001 + i) for i in range(6)]
    assert all((r[2] - 1) % 50 == 0 and (r[3] - 1) % 50 == 0 for r in rows)
    assert len({(r[0], r[2], r[3]) for r in rows}) == len(rows)  # one patch per grid cell
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["GENERATED.txt", "generated.json"]
    text = (root / "GENERATED.txt").read_text()
    assert "NOT PATIENT DATA" in text and '"seed": 0' in text and '"n_patients": 6' in text
    assert not [p for p in root.parent.iterdir() if "partial" in p.name]  # no temporary folder left


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    _, root = small
    again = make_demo(tmp_path / "again", n_patients=6, seed=0)
    assert digest(tmp_path / "again") == digest(root)
    assert again["patches"] == small[0]["patches"]
    make_demo(tmp_path / "other", n_patients=6, seed=1)
    assert digest(tmp_path / "other") != digest(root)


def test_default_set_statistics(default_set):
    summary, root = default_set
    rows = scan(root)
    assert summary["patients"] == 24 and summary["patches"] == len(rows)
    assert 2000 <= len(rows) <= 6000
    assert 0.2 <= summary["positives"] / summary["patches"] <= 0.36
    per = defaultdict(list)
    for r in rows:
        per[r[0]].append(r[1])
    assert len(per) == 24
    assert sum(np.mean(v) > 0.8 for v in per.values()) >= 2
    sizes = [len(v) for v in per.values()]
    assert max(sizes) / min(sizes) > 5
    assert all(r[6] == "RGB" for r in rows)
    small = [r for r in rows if (r[4], r[5]) != (50, 50)]
    assert summary["small_patches"] == len(small) > 0
    # Small patches lie where the slide ends: the patient's last column or last row.
    last_x = {p: max(r[2] for r in rows if r[0] == p) for p in per}
    last_y = {p: max(r[3] for r in rows if r[0] == p) for p in per}
    for p, _, x, y, w, h, _, rel in small:
        assert (w < 50 and x == last_x[p]) or (h < 50 and y == last_y[p]), rel


def test_positive_patches_form_regions(default_set):
    rows = scan(default_set[1])
    label = {(r[0], r[2], r[3]): r[1] for r in rows}
    pos = [k for k, v in label.items() if v == 1]
    steps = ((50, 0), (-50, 0), (0, 50), (0, -50))
    with_pos_neighbour = sum(any(label.get((p, x + dx, y + dy)) == 1 for dx, dy in steps) for p, x, y in pos)
    assert with_pos_neighbour / len(pos) > 0.85
    # ...and tumour is not everywhere: nearly every patient also has negative patches.
    assert len({k[0] for k, v in label.items() if v == 0}) >= 22


def test_foreign_folder_is_refused(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=re.escape(str(foreign))):
        make_demo(foreign, n_patients=2)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_existing_set_with_other_parameters_is_refused(small):
    _, root = small
    with pytest.raises(ValueError, match=re.escape(str(root))):
        make_demo(root, n_patients=6, seed=1)


def test_second_call_returns_without_rewriting(small):
    summary, root = small
    before = {r[-1]: os.stat(root / r[-1]).st_mtime_ns for r in scan(root)}
    assert make_demo(root, n_patients=6, seed=0) == summary
    assert {r[-1]: os.stat(root / r[-1]).st_mtime_ns for r in scan(root)} == before


def test_empty_target_folder_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    summary = make_demo(tmp_path / "empty", n_patients=1, seed=3)
    assert summary["patches"] == len(scan(tmp_path / "empty")) > 0


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    real, calls = demo._patient, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(demo, "_patient", failing)
    with pytest.raises(KeyboardInterrupt):
        make_demo(tmp_path / "set", n_patients=3)
    assert list(tmp_path.iterdir()) == []


def load_patches(root):
    """All patches as uint8 (n, 50, 50, 3), smaller ones padded with white (255); labels; patient ids."""
    rows = scan(root)
    x = np.full((len(rows), 50, 50, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        with Image.open(root / r[-1]) as im:
            x[i, : r[5], : r[4]] = np.asarray(im)
    return x, np.array([r[1] for r in rows]), np.array([int(r[0]) for r in rows])


@pytest.mark.slow
def test_learnable_but_not_trivial(default_set):
    """A small CNN trained on 18 patients must beat chance on 6 held-out patients, but not be perfect."""
    import keras
    from sklearn.metrics import balanced_accuracy_score

    x, y, patient = load_patches(default_set[1])
    held_out = (patient - 90001) % 4 == 3  # a fixed split by patient: 90004, 90008, ..., 90024
    assert len(set(patient[held_out])) == 6 and set(y[held_out]) == {0, 1}
    keras.utils.set_random_seed(0)
    inp = keras.Input((50, 50, 3))
    h = keras.layers.Rescaling(1 / 255)(inp)
    for filters in (16, 32, 64):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    y_train = y[~held_out]
    weights = {c: len(y_train) / (2 * np.sum(y_train == c)) for c in (0, 1)}  # 28% positive: balance the loss
    model.fit(x[~held_out], y_train, epochs=5, batch_size=64, class_weight=weights, verbose=0)
    pred = model.predict(x[held_out], batch_size=256, verbose=0).argmax(1)
    score = balanced_accuracy_score(y[held_out], pred)
    assert 0.65 < score < 0.98, score


# --- exact class counts: the full-size set's plan, tested small (the full set is the benchmark's) ---

def test_full_plan_adds_up_to_the_real_sets_counts():
    sizes, fracs, cuts = demo._plan_exact(demo.FULL["patients"], demo.FULL["negatives"], demo.FULL["positives"], 0)
    positives = np.round(fracs * sizes).astype(int)
    assert len(sizes) == 279
    assert sizes.sum() == 277_524
    assert positives.sum() == 78_786 and (sizes - positives).sum() == 198_738
    assert (positives <= sizes).all() and sizes.min() >= 1
    # a long right tail, as in the real set: dozens to thousands of patches per patient
    assert sizes.min() < 300 and sizes.max() > 2000 and np.median(sizes) < sizes.mean()
    assert 5 <= (positives == 0).sum() <= 40  # some patients without IDC, most with some
    assert cuts.sum() == round(0.3 * 279)


def test_apportion_is_exact_and_respects_caps():
    out = demo._apportion(10, [1, 1, 1], [10, 10, 2])
    assert out.tolist() == [4, 4, 2]
    assert demo._apportion(7, [3, 1], [10, 10]).tolist() == [5, 2]
    with pytest.raises(ValueError, match="cannot place 30"):
        demo._apportion(30, [1, 1], [10, 10])


def test_exact_counts_in_parallel_match_one_process(tmp_path):
    kwargs = dict(n_patients=5, seed=3, counts=(700, 260))
    one = make_demo(tmp_path / "one", workers=1, **kwargs)
    two = make_demo(tmp_path / "two", workers=2, **kwargs)
    rows = scan(tmp_path / "one")
    assert one["negatives"] == 700 and one["positives"] == 260 and one["patches"] == 960
    assert sum(r[1] for r in rows) == 260 and len(rows) == 960
    assert len({r[0] for r in rows}) == 5
    assert {k: v for k, v in one.items() if k != "root"} == {k: v for k, v in two.items() if k != "root"}
    assert digest(tmp_path / "one") == digest(tmp_path / "two")


def test_exact_counts_refuse_too_few_patches(tmp_path):
    with pytest.raises(ValueError, match="at least one patch per patient"):
        make_demo(tmp_path / "x", n_patients=5, counts=(2, 1))
