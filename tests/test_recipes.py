import dataclasses
import json

import keras
import numpy as np
import pytest

from helpers import train
from helpers.data import pipeline, splits, stain
from helpers.recipes import context
from helpers.io import json_safe
from helpers.recipes.recipe import (BEST_BASE, BEST_INGREDIENTS, BEST_VERSION, DECISION_OPTIONS, INGREDIENTS, LATER_OPTIONS,
                                   RECIPES, Predictor, Recipe, _fingerprint, best_base, build_member, describe,
                                   evaluate_dir, get, learning_rate, with_ingredient)
from helpers.recipes.recipe import train as train_recipe

OPTIONS = [f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "version")]


def test_the_original_recipe_is_the_seed_projects_setup():
    original = get("original")
    assert (original.name, original.version) == ("original", 1)
    assert original.model == "cancernet" and original.head == "flatten"
    assert original.bn_momentum == 0.99 and original.recalibrate_bn == 0
    assert original.optimizer == "adagrad" and original.learning_rate == 0.0282 and original.schedule == "constant"
    assert original.batch_size == 64 and original.epochs == 20
    assert original.class_weight is False and original.sampling == "natural"
    assert original.threshold == "fixed" and original.monitor == "val_loss" and original.patience == 5
    assert original.augment == "none" and original.stain == "none" and original.label_smoothing == 0.0
    assert original.tta is False and original.ensemble == 1 and original.pretrain == "none"


def test_the_original_model_scales_inputs_to_unit_range_and_flattens():
    model = build_member(get("original"), "cancernet")
    rescale = model.get_layer("rescale")
    assert isinstance(rescale, keras.layers.Rescaling) and rescale.scale == pytest.approx(1 / 255)
    assert model.get_layer("flatten") is not None
    assert {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.99}
    gap = build_member(get("original+gap_head+bn_fix"), "cancernet")
    assert isinstance(gap.get_layer("gap"), keras.layers.GlobalAveragePooling2D)
    assert not any(isinstance(layer, keras.layers.Flatten) for layer in gap.layers)
    assert {layer.momentum for layer in gap.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}


@pytest.mark.parametrize("ingredient", list(INGREDIENTS))
def test_each_ingredient_changes_only_its_own_options(ingredient):
    original = get("original")
    mixed = with_ingredient(original, ingredient)
    changed = {k for k in OPTIONS if getattr(mixed, k) != getattr(original, k)}
    assert changed == set(INGREDIENTS[ingredient])
    assert mixed.name == f"original+{ingredient}" and mixed.version == original.version
    assert get(f"original+{ingredient}") == mixed


def test_best_combines_its_ingredients_and_options_override():
    best = RECIPES["best"]
    assert best.training_options == get(best_base()).training_options
    assert RECIPES["best_v4"].version == 4 and RECIPES["best_v4"].tta and RECIPES["best_v4"].optimizer == "adam"
    for ingredient in BEST_INGREDIENTS:
        for key, value in INGREDIENTS[ingredient].items():
            assert getattr(best, key) == value
    assert best.version == BEST_VERSION
    short = get("best", epochs=3, ensemble=2)
    assert short.epochs == 3 and short.ensemble == 2 and short.name == "best[ensemble=2]"
    assert get("original", epochs=None) == get("original")  # None: not given


def test_an_override_is_named_so_that_its_run_does_not_overwrite_the_named_recipes():
    assert get("original", epochs=3).name == "original"  # the budget: named by crossval's folder tail
    assert get("original", optimizer="adagrad").name == "original"  # original's own value changes nothing
    mixed = get("original+bn_fix", model="vgg_style", ensemble_models=["cancernet", "vgg_style"])
    assert mixed.name == "original+bn_fix[model=vgg_style,ensemble_models=cancernet-vgg_style]"
    assert mixed.ensemble_models == ("cancernet", "vgg_style")
    assert get(mixed, model="vgg_style").name == mixed.name  # a Recipe passes through unchanged


def test_training_options_leave_out_only_the_decision():
    original = get("original")
    assert set(original.training_options) == set(OPTIONS) - set(DECISION_OPTIONS)
    assert get("original+threshold+tta").training_options == original.training_options
    assert get("original+bn_fix+tta").training_options == get("original+bn_fix").training_options
    assert get("original+bn_fix").training_options != original.training_options
    mixed = get("original+ensemble", ensemble_models=("cancernet",))
    stored = Recipe.from_dict(json.loads(json.dumps(mixed.as_dict())))  # a list in JSON, a tuple again
    assert stored.training_options == mixed.training_options


def test_best_is_trained_as_its_base():
    base = best_base()
    assert base.startswith(BEST_BASE) and not any(f"+{d}" in base for d in DECISION_OPTIONS)
    assert get(base).training_options == RECIPES["best"].training_options


def test_unknown_names_are_named_in_the_error():
    with pytest.raises(ValueError, match="'sede'.*original"):
        get("sede")
    with pytest.raises(ValueError, match="'saffron'.*class_weight"):
        get("original+saffron")
    with pytest.raises(ValueError, match="'saffron'"):
        with_ingredient("original", "saffron")
    with pytest.raises(ValueError, match="'colour'"):
        get("original", colour=1)
    with pytest.raises(ValueError, match="'vahadane'"):
        get("original", stain="vahadane")
    with pytest.raises(ValueError, match="'resnet9'"):
        get("original", ensemble_models=["resnet9"])
    with pytest.raises(ValueError, match="ema must be in \\[0, 1\\).*got 0.0, 1.0"):
        get("original", ema=1.0)


def test_the_old_name_seed_reads_as_original():
    # model.json files and stored cross-validations written before the rename say "seed"
    assert get("seed") == get("original") and get("seed+bn_fix+tta") == get("original+bn_fix+tta")
    stored = get("original+tta", ensemble=2).as_dict()
    old = {**stored, "name": "seed+tta[ensemble=2]", "options": {**stored["options"], "augment": "seed_both_flips"}}
    recipe = Recipe.from_dict(json.loads(json.dumps(old)))
    assert recipe.name == "original+tta[ensemble=2]" and recipe.augment == "original_both_flips"
    assert Recipe.from_dict({**stored, "name": "seed"}).name == "original"
    assert Recipe.from_dict({**stored, "name": "seed & best"}).name == "original & best"  # a view ensemble's


def test_recipe_round_trips_through_a_dict():
    r = get("best", ensemble=3, ensemble_models=["cancernet", "vgg_style"])
    assert Recipe.from_dict(r.as_dict()) == r
    assert r.members() == ["cancernet", "vgg_style", "cancernet"]


def test_model_json_round_trips_to_an_equal_predictor(tmp_path, rng):
    recipe = get("original+tta+stain_reinhard", ensemble=2, ensemble_models=["cancernet", "vgg_style"])
    members = [(build_member(recipe, arch), {"file": f"member{m}.keras", "model": arch,
                                                     "image_size": 50, "seed": 7 + m})
               for m, arch in enumerate(recipe.members())]
    images = rng.integers(60, 230, size=(6, 50, 50, 3)).astype(np.uint8)
    target = stain.fit_target(images, "reinhard")
    saved = Predictor(members, recipe, stain=target, threshold=0.37, threshold_source="chosen on validation",
                      context={"coef": [0.8, 0.5], "intercept": -0.2, "patients": 3, "patches": 6, "fitted": True})
    saved.save(tmp_path)
    for path in (tmp_path, tmp_path / "model.json", tmp_path / "model.keras"):  # a folder, its json, the usual name
        loaded = Predictor.load(path)
        assert loaded.config() == saved.config()
    assert loaded.recipe == recipe and loaded.tta and loaded.stain == target
    patients = np.array(["a", "a", "b", "b", "c", "c"])
    np.testing.assert_allclose(loaded.predict(images, patients=patients), saved.predict(images, patients=patients), atol=1e-6)
    with pytest.raises(ValueError, match="slide.*patients="):
        saved.predict(images)
    single, averaged = saved.predict_both(images)  # one pass over the 8 views gives both decisions' inputs
    np.testing.assert_allclose(context.apply(saved.context, single, patients),
                               saved.predict(images, tta=False, patients=patients), atol=1e-6)
    np.testing.assert_allclose(context.apply(saved.context, averaged, patients), saved.predict(images, patients=patients),
                               atol=1e-6)
    assert not np.allclose(single, averaged, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="model file .*nothing-here does not exist"):
        Predictor.load(tmp_path / "nothing-here")


def test_a_model_file_saved_without_a_recipe_is_one_member_at_its_sidecars_threshold(tree, tmp_path):
    # P(IDC) = 0.4 for every patch: 2 of the tree's 10 patches are IDC
    inputs = keras.Input((50, 50, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", kernel_initializer="zeros",
                                 bias_initializer=keras.initializers.Constant([0.0, np.log(0.4 / 0.6)]))(pooled)
    keras.Model(inputs, outputs).save(tmp_path / "nb.keras")
    scored = evaluate_dir(tmp_path / "nb.keras", tree)  # no sidecar: 0.5
    assert scored["recipe"] is None and scored["members"] == 1 and scored["model"] is None and not scored["tta"]
    assert scored["threshold"] == 0.5 and scored["threshold_source"] == "0.5: no threshold saved with the model"
    assert (scored["n"], scored["positives"], scored["tp"], scored["fp"], scored["tn"]) == (10, 2, 0, 0, 8)

    (tmp_path / "nb.json").write_text(json.dumps({"threshold": 0.3, "model": "cancernet", "image_size": 50}))
    scored = evaluate_dir(tmp_path / "nb.keras", tree)
    assert scored["threshold"] == 0.3 and scored["threshold_source"] == "saved in nb.json"
    assert scored["model"] == "cancernet" and (scored["tp"], scored["fp"], scored["fn"]) == (2, 8, 0)
    assert [p["patches"] for p in scored["per_patient"]] == [6, 4]
    assert evaluate_dir(tmp_path / "nb.keras", tree, threshold=0.5)["threshold_source"] == "given"

    # the folder an older ``train`` wrote: model.keras beside a model.json that names no recipe
    (tmp_path / "old").mkdir()
    (tmp_path / "nb.keras").rename(tmp_path / "old" / "model.keras")
    (tmp_path / "old" / "model.json").write_text(json.dumps(
        {"model": "cancernet", "threshold": 0.25, "threshold_source": "chosen on validation at training"}))
    for path in (tmp_path / "old", tmp_path / "old" / "model.json"):
        old = Predictor.load(path)
        assert old.threshold == 0.25 and old.threshold_source == "chosen on validation at training"
        assert old.recipe is None
        assert old.members[0][1] == {"file": "model.keras", "model": "cancernet", "image_size": 50}


def test_balanced_sampling_gives_even_batches(rng):
    labels = (np.arange(400) < 40).astype(np.int32)  # 10% positive
    images = rng.integers(0, 256, size=(400, 50, 50, 3)).astype(np.uint8)
    ds = pipeline.make_dataset(images=images, labels=labels, batch_size=50, shuffle=True, balance=True, seed=3)
    seen = np.concatenate([y.numpy() for _, y in ds])
    assert len(seen) == 400  # an epoch is as long as the data
    assert 0.42 < seen.mean() < 0.58
    with pytest.raises(ValueError, match="both classes"):
        pipeline.make_dataset(images=images[40:], labels=labels[40:], balance=True, shuffle=True)


def test_class_weights_are_inverse_frequencies():
    w = train.class_weights([0] * 75 + [1] * 25)
    assert w == pytest.approx({0: 100 / (2 * 75), 1: 100 / (2 * 25)})


def _he_patches(rng, n, size=50):
    """Beer-Lambert H&E-like patches: random haematoxylin and eosin amounts per pixel."""
    h, e = np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11])
    conc = rng.gamma(2.0, 0.25, size=(n, size, size, 2))
    od = conc[..., :1] * h + conc[..., 1:] * e
    return np.clip(240 * np.exp(-od), 0, 255).astype(np.uint8)


def _lab_stats(images):
    from torchstain.numpy.utils import lab_split, rgb2lab

    labs = lab_split(rgb2lab(images.astype(np.float32) / 255))
    return np.array([[c.mean(), c.std()] for c in labs])


def test_reinhard_maps_a_patchs_lab_statistics_to_the_targets(rng):
    patch = rng.integers(90, 200, size=(1, 50, 50, 3)).astype(np.uint8)
    target = {"method": "reinhard", "means": [60.0, 15.0, -8.0], "stds": [12.0, 8.0, 6.0]}
    out = stain.Normalizer(target).normalize(patch)
    assert out.fallbacks == 0 and out.images.dtype == np.uint8
    stats = _lab_stats(out.images)
    np.testing.assert_allclose(stats[:, 0], target["means"], atol=1.0)
    np.testing.assert_allclose(stats[:, 1], target["stds"], atol=0.6)


def test_reinhard_leaves_its_own_target_nearly_unchanged(rng):
    patches = _he_patches(rng, 16)
    target = stain.fit_target(patches, "reinhard")
    tile = stain.mosaic(patches)[None]  # the image the target was fitted on
    out = stain.Normalizer(target)(tile)
    assert np.abs(out.astype(int) - tile.astype(int)).mean() < 1.0


def test_batched_normalisers_match_torchstain_per_patch(rng):
    import torchstain

    patches = _he_patches(rng, 6)
    for method in stain.METHODS:
        target = stain.fit_target(patches, method)
        ours = stain.Normalizer(target)(patches)
        if method == "reinhard":
            ref = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
            ref.target_means, ref.target_stds = np.array(target["means"]), np.array(target["stds"])
            theirs = [ref.normalize(p) for p in patches]
        else:
            ref = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
            ref.HERef, ref.maxCRef = np.array(target["stain_matrix"]), np.array(target["max_c"])
            theirs = [ref.normalize(p, stains=False)[0] for p in patches]
        assert np.abs(ours.astype(int) - np.stack(theirs).astype(int)).max() <= 1, method


def test_macenko_keeps_and_counts_a_white_patch(rng):
    patches = _he_patches(rng, 3)
    white = np.full((1, 50, 50, 3), 250, dtype=np.uint8)
    target = stain.fit_target(patches, "macenko")
    assert np.array(target["stain_matrix"]).shape == (3, 2) and len(target["max_c"]) == 2
    out = stain.Normalizer(target).normalize(np.concatenate([patches[:1], white, patches[1:]]))
    assert out.fallbacks == 1
    np.testing.assert_array_equal(out.images[1], white[0])
    assert not np.array_equal(out.images[0], patches[0])


def test_the_warmup_schedule_rises_linearly_then_decays():
    recipe = get("original+warmup", learning_rate=0.01, epochs=4)
    schedule = learning_rate(recipe, steps_per_epoch=10)  # 10 warm-up steps of 40
    lr = lambda step: float(schedule(step))  # noqa: E731
    assert lr(0) == pytest.approx(0.0)
    assert lr(5) == pytest.approx(0.005)
    assert lr(10) == pytest.approx(0.01)
    assert lr(25) == pytest.approx(0.005, rel=1e-4)  # half-way down the cosine
    assert lr(40) == pytest.approx(0.0, abs=1e-7)
    assert learning_rate(get("original"), 10) == 0.0282
    optimizer = train.make_optimizer("adam", schedule)
    assert isinstance(optimizer.learning_rate, keras.Variable) or callable(optimizer._learning_rate)


def test_describe_lists_every_ingredient_and_what_it_changes():
    table = describe()
    assert list(table.index) == list(INGREDIENTS)
    assert table.loc["tta", "changes"] == "tta: False -> True"
    assert table.loc["bn_fix", "in best"] and table.loc["class_weight", "in best"]  # careful's, so v5's
    assert not table.loc["adam", "in best"]  # careful's Adam starts at 2e-3, not 1e-3


def test_the_training_share_is_checked_and_named_in_the_recipe():
    with pytest.raises(ValueError, match="train_share must be in \\(0, 1\\], got 0"):
        get("original", train_share=0)
    with pytest.raises(ValueError, match="train_subset='slides'"):
        get("original", train_subset="slides")
    r = get("best", train_share=0.25, train_subset="patients")
    assert r.name == "best[train_share=0.25,train_subset=patients]" and Recipe.from_dict(r.as_dict()) == r


def test_weights_image_size_and_build_shape_the_recipes_model(tmp_path):
    r = get("best", image_size=64, fine_tune_at=2, build={"kernel_size": 5, "downsample": "stride", "dropout": 0.3})
    assert r.name == "best[image_size=64,fine_tune_at=2,build=kernel_size:5-downsample:stride-dropout:0.3]"
    assert Recipe.from_dict(json.loads(json.dumps(r.as_dict()))) == r
    model = build_member(r, "cancernet")
    assert model.input_shape == (None, 64, 64, 3) and model.get_layer("block1_sepconv1").kernel_size == (5, 5)
    assert model.get_layer("block2_sepconv1").strides == (2, 2) and model.get_layer("gap") is not None  # best's head
    assert [layer.trainable for layer in model.layers[2:5]] == [False, False, True]  # the first 2 after the rescaling
    assert r.input_size("cancernet") == 64 and r.input_size("vgg_style") == 50  # another member: its own size
    assert [d.rate for d in model.layers if isinstance(d, keras.layers.Dropout)][-1] == 0.3
    model.save_weights(tmp_path / "start.weights.h5")  # weights="PATH": the member starts from them
    started = build_member(r, "cancernet", weights=str(tmp_path / "start.weights.h5"))
    for mine, theirs in zip(started.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(ValueError, match="weights='imagenet' and pretrain='breakhis' both"):
        get("original", weights="imagenet", pretrain="breakhis")
    with pytest.raises(ValueError, match="build takes keywords .* other than image_size.*got \\{'head': 'gap'\\}"):
        get("original", build={"head": "gap"})
    assert get("original", weights="/models/my start.keras").name == "original[weights=_models_mystart.keras]"


def test_options_added_later_leave_stored_fingerprints_unchanged():
    # stored cross-validations are found by a hash of the recipe; an option added since must not
    # change it while at its default (the values are what the code of 2026-12-06 gave)
    assert set(LATER_OPTIONS) <= set(OPTIONS)
    assert not set(LATER_OPTIONS) & set(get("best").as_dict()["options"])
    assert get("original", train_share=0.5).as_dict()["options"]["train_share"] == 0.5
    x = np.arange(4 * 50 * 50 * 3, dtype=np.uint8).reshape(4, 50, 50, 3)
    y = np.array([0, 1, 0, 1])
    v4 = dataclasses.replace(get("best_v4"), name="best", version=4)  # best as it was stored until v5
    assert _fingerprint(v4, 7, (x, y), (x[:2], y[:2])) == "d8feca96f7e279d9"
    old_name = dataclasses.replace(get("original+ema", epochs=10), name="seed+ema")  # "original" was "seed" then
    assert _fingerprint(old_name, 7, (x, y), (x[:2], y[:2])) == "2b1f9b0fc314a988"


def test_a_share_of_the_training_split_needs_its_patients_and_trains_on_that_share(tmp_path, rng):
    x = rng.integers(0, 255, size=(24, 50, 50, 3)).astype(np.uint8)
    y = np.tile([0, 1], 12)
    recipe = get("original", train_share=0.5, epochs=1, batch_size=8)
    with pytest.raises(ValueError, match="train_patients.*24 training patches"):
        train_recipe(recipe, (x, y), (x[:6], y[:6]), tmp_path, verbose=0, log=None)
    patients = np.repeat(["a", "b", "c"], 8)
    predictor = train_recipe(recipe, (x, y), (x[:6], y[:6]), tmp_path, verbose=0, log=None, train_patients=patients)
    assert predictor.info["train_patches"] == 12 and predictor.info["train_patients"] == 3


def test_split_counts_and_the_printed_table_are_splits_describe_with_a_total():
    import pandas as pd

    df = pd.DataFrame({"patient": ["a", "a", "b", "c", "c", "d"], "label": [1, 0, 0, 1, 1, 0],
                       "split": ["train", "train", "train", "val", "val", "test"]})
    assert splits.split_counts(df) == {
        "train": {"patients": 2, "patches": 3, "positives": 1, "positive_share": 0.333},
        "val": {"patients": 1, "patches": 2, "positives": 2, "positive_share": 1.0},
        "test": {"patients": 1, "patches": 1, "positives": 0, "positive_share": 0.0},
    }
    rows = [line.split() for line in splits.counts_table(df).splitlines()]
    assert [r for r in rows if r[0] in ("train", "val", "test", "total")] == [
        ["train", "2", "3", "1", "0.333"], ["val", "1", "2", "2", "1.000"], ["test", "1", "1", "0", "0.000"],
        ["total", "4", "6", "3", "0.500"]]
    assert splits.used_patches_line(6, 6, "DIR") == "using all 6 usable patches of DIR"
    assert splits.used_patches_line(4, 6, "DIR", "capped at 4 patches") == \
        "using 4 of the 6 usable patches of DIR: capped at 4 patches"


def test_json_safe_turns_undefined_scores_into_null():
    doc = {"roc_auc": float("nan"), "scores": [np.float32(0.5), np.inf, -np.inf], "n": np.int64(3), "name": "x"}
    safe = json_safe(doc)
    assert safe == {"roc_auc": None, "scores": [0.5, None, None], "n": 3, "name": "x"}
    assert type(safe["n"]) is int
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe
