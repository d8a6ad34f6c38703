"""The thyroid track's data for models, its evaluation across variants, and its study runs."""

import json
import re
import shutil

import keras
from sklearn.metrics import roc_auc_score
import numpy as np
import pandas as pd
import pytest

from helpers import cam, train
from helpers.data import source
from helpers.studies import compare, study
from helpers.thyroid import track
from helpers.thyroid.generator import make_demo
from helpers.thyroid.index import group_id, load_images, parse_name


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("thyroid") / "set"
    make_demo(root, n_nodules=30, images_per_nodule=2, seed=0)
    return root


@pytest.fixture
def cfg(demo, tmp_path):
    return source.resolve("smoke", data_dir=demo, output_dir=tmp_path / "out", batch_size=16, epochs=1, seed=1)


def test_featurewise_stats_exact():
    x = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    x[0, ..., 0] = 10
    x[1, ..., 0] = 30
    x[..., 2] = 255
    mean, variance = track.featurewise_stats(x)
    assert mean == [20.0, 0.0, 255.0]
    assert variance == [100.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"\(n, h, w, 3\).*\(2, 2\)"):
        track.featurewise_stats(np.zeros((2, 2)))


def test_prepare_splits_by_nodule_and_normalises_on_training_images_only(cfg):
    data = track.prepare(cfg, 32, train_on="cropped")
    index = data.index
    groups = {s: set(index.loc[index["split"] == s, "group"]) for s in ("train", "val", "test")}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])
    assert set(index["variant"]) == {"cropped"}
    assert set(data.extra["tests"]) == {"cropped", "uncropped"}
    # the uncropped test images are the same nodules as the cropped ones
    assert len(data.extra["test_labels"]["uncropped"]) == (index["split"] == "test").sum()

    train_rows = index[index["split"] == "train"]
    expected = track.featurewise_stats(load_images(train_rows, 32))
    np.testing.assert_allclose(data.extra["build"]["normalize"], expected)
    assert data.extra["images_train"].shape == (len(train_rows), 32, 32, 3)

    x, y = next(iter(data.train))
    assert x.shape[1:] == (32, 32, 3) and x.dtype == "float32" and y.shape[1] == 2
    n_test = sum(int(b[1].shape[0]) for b in data.test)
    assert n_test == (index["split"] == "test").sum() == len(data.part("test"))
    counts = track.counts(data)
    assert counts[["benign", "malignant"]].to_numpy().sum() == len(index)


def sides(index):
    return {s: set(index.loc[index["split"] == s, "group"]) for s in ("train", "val", "test")}


def test_a_nodule_in_both_given_folders_is_tested_on_and_never_trained_on(demo, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(demo, root)
    first = sorted((root / "cropped" / "train").glob("*.jpg"))[0]  # image 1 of a training nodule
    for variant in ("cropped", "uncropped"):
        (root / variant / "train" / first.name).rename(root / variant / "test" / first.name)
    nodule = group_id(*parse_name(first.name))

    index, report = track.split_index(root, seed=1)
    # its image 2, in both variants, is still in the training folder: those two move to test
    assert report.groups_in_train_and_test == [nodule] and report.moved_to_test == 2
    assert index.loc[index["moved_to_test"], "path"].map(lambda p: p.split("/")[-1]).tolist() == \
        [first.name.replace("-0001-", "-0002-")] * 2
    cfg = source.resolve("smoke", data_dir=root, output_dir=tmp_path / "out", batch_size=16, epochs=1, seed=1)
    for train_on in ("cropped", ["cropped", "uncropped"]):
        data = track.prepare(cfg, 32, train_on=train_on, index=index)
        groups = sides(data.index)
        assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])
        assert nodule in groups["test"]
    assert (data.index["group"] == nodule).sum() == 2  # both of its images, in the tested variant
    assert len(data.extra["test_labels"]["uncropped"]) == (data.index["split"] == "test").sum()


def test_prepare_refuses_an_index_with_a_nodule_on_two_sides(cfg):
    index = track.split_index(cfg.data_dir, seed=1)[0]
    train_nodule = index.loc[index["split"] == "train", "group"].iloc[0]
    leaky = index.copy()
    leaky.loc[leaky.index[(leaky["group"] == train_nodule) & (leaky["variant"] == "uncropped")], "split"] = "test"
    with pytest.raises(ValueError, match=re.escape(f"1 nodule(s) in more than one split: {train_nodule} (test/train)")):
        track.prepare(cfg, 32, train_on="cropped", index=leaky)


def test_training_on_both_variants_holds_each_image_twice(cfg):
    both = track.prepare(cfg, 32, train_on=["cropped", "uncropped"], test_on="uncropped")
    one = track.prepare(cfg, 32, train_on="cropped")
    n = lambda d, s: (d.index["split"] == s).sum()  # noqa: E731
    assert n(both, "train") == 2 * n(one, "train") and n(both, "val") == 2 * n(one, "val")
    assert set(both.index.loc[both.index["split"] == "test", "variant"]) == {"uncropped"}
    assert both.extra["key"] != one.extra["key"]


def test_unknown_variant_is_named(cfg):
    with pytest.raises(ValueError, match="'sideways'"):
        track.prepare(cfg, 32, train_on="sideways")


def _mean_brightness_model(size):
    # A fixed model: malignant probability rises with the image's mean brightness.
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant([[-0.01, 0.01]] * 3))(x)
    return keras.Model(inputs, keras.layers.Softmax()(x))


def test_cross_evaluate_scores_every_arm_on_every_variant(cfg):
    data = track.prepare(cfg, 32, train_on="cropped")
    arms = {"cropped": (_mean_brightness_model(32), data)}
    table, curves = track.cross_evaluate(arms, "generated thyroid demo data", thresholds={"cropped": 0.5})
    assert list(table["tested on"]) == ["cropped", "uncropped"]
    assert table.columns[0] == "data" and set(table["data"]) == {"generated thyroid demo data"}
    for bad in ("", None):
        with pytest.raises(ValueError, match=re.escape(f"got {bad!r}")):
            track.cross_evaluate(arms, bad, thresholds={"cropped": 0.5})
    by_arm = table.set_index(["trained on", "tested on"])  # as notebook 17 quotes a score
    assert by_arm.index.is_unique and by_arm.loc[("cropped", "uncropped"), "n"] == table.loc[1, "n"]
    assert (table["threshold"] == 0.5).all()
    assert set(curves) == {"train cropped -> test cropped", "train cropped -> test uncropped"}
    from sklearn import metrics as skm

    for i, tested in enumerate(["cropped", "uncropped"]):  # each row's scores are its curve's at 0.5, rounded
        y, p = curves[f"train cropped -> test {tested}"]
        assert table.loc[i, "roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=5e-4)
        assert table.loc[i, "f1"] == pytest.approx(skm.f1_score(y, p >= 0.5), abs=5e-4)
        assert table.loc[i, "balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p >= 0.5), abs=5e-4)
    y, p = curves["train cropped -> test cropped"]
    assert len(y) == len(p) == table.loc[0, "n"]

    fig = track.roc_figure(curves, "title", "generated demo data; test split")
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert len(labels) == 3 and labels[-1] == "chance"
    assert all(re.search(r"AUC 0\.\d{3}\)$", lab) for lab in labels[:2])
    assert len({tuple(line.get_color()) if not isinstance(line.get_color(), str) else line.get_color()
                for line in ax.lines[:2]}) == 2, "each curve its own colour"


def test_outcome_grid_names_the_thyroid_classes(cfg):
    data = track.prepare(cfg, 32, train_on="cropped")
    model = _mean_brightness_model(32)
    images, labels, proba = track.test_examples(model, data, "uncropped", n=4, seed=0)
    assert images.shape == (len(labels), 32, 32, 3) and set(labels) <= {0, 1}
    fig = cam.outcome_grid(images, np.zeros(images.shape[:3]), labels, proba, 0.5, "t", per_group=2,
                           class_names=track.CLASS_NAMES)
    texts = " ".join(t.get_text() for f in [fig, *fig.subfigs] for t in f.texts) + fig._suptitle.get_text()
    assert "malignant" in texts and "IDC" not in texts


@pytest.mark.slow
def test_a_thyroid_study_run_is_recorded_as_thyroid_with_a_sidecar(cfg):
    data = track.prepare(cfg, 32, train_on="cropped")
    variant = study.Variant("tiny", model="cancernet", image_size=32,
                            training=train.Training(checkpoint_metrics=("val_loss", "val_accuracy")))
    done = study.run_study(cfg, "thyroid_t", "16_thyroid_backbones", [variant], seeds=[0],
                           prepare=lambda size, augmentation: data)
    path = study.run_path(done, "tiny", cfg.output_dir) / "best.keras"
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["task"] == "thyroid" and sidecar["class_names"] == ["benign", "malignant"]
    assert sidecar["image_size"] == 32 and sidecar["generated"] is True
    names = [p.name for p in (path.parent / "checkpoints").glob("*.keras")]
    assert names and all(re.fullmatch(r"tiny-epoch01-val_loss\d\.\d{4}-val_accuracy[01]\.\d{4}\.keras", n)
                         for n in names)
    y, p = study.test_predictions(done, "tiny", cfg.output_dir)
    assert len(y) == len(p) == len(data.part("test")) and set(y) <= {0, 1}
    assert done.runs.loc[0, "roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-3)
    assert compare.model_runs(cfg.output_dir).empty  # the IDC comparison leaves thyroid runs out
    thyroid_runs = compare.model_runs(cfg.output_dir, task="thyroid")
    assert list(thyroid_runs["run"]) == ["thyroid_t_tiny_seed0"]
    # a rerun with the same data reads the run back instead of training again
    again = study.run_study(cfg, "thyroid_t", "16_thyroid_backbones", [variant], seeds=[0],
                            prepare=lambda size, augmentation: data)
    pd.testing.assert_frame_equal(again.runs, done.runs)


def test_scores_and_the_seeds_figures_are_tables_apart_each_naming_its_data():
    ours = pd.DataFrame({"model": ["vgg19"], "roc_auc": [0.61]})
    labelled = track.with_data(ours, "generated thyroid demo data")
    assert labelled.to_dict("records") == [{"data": "generated thyroid demo data", "model": "vgg19", "roc_auc": 0.61}]
    assert list(ours.columns) == ["model", "roc_auc"]  # the input is not changed
    with pytest.raises(ValueError, match=re.escape("already has a data column: ['generated thyroid demo data']")):
        track.with_data(labelled, "real data: x")

    original = track.original_table()
    assert len(original) == 7 and set(original["data"]) == {"seed project's real thyroid images (its slides)"}
    assert original.loc[0, ["data", "model", "test accuracy"]].tolist() == [track.ORIGINAL_DATA, "vgg19", "> 0.80"]
    theirs = track.original_table(model="(their model)")
    assert theirs[["trained on", "tested on", "test accuracy"]].values.tolist() == [
        ["cropped", "cropped", "> 0.93"], ["cropped", "uncropped", "< 0.70"]]
    with pytest.raises(ValueError, match="no column 'backbone'"):
        track.original_table(backbone="vgg19")
