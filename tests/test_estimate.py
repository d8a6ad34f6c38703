"""helpers.tools.estimate: FLOPs counted exactly, the estimate's arithmetic, its coverage and errors.

Big models are never built here: their FLOPs are read from helpers/flops.json.
"""

import math
from pathlib import Path

import pytest

from helpers.tools import estimate
from helpers.tools.estimate import Job, Notebook


def test_dense_layer_flops_are_multiply_adds_plus_biases():
    import keras

    inputs = keras.Input((10,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    # 10 x 2 multiply-adds at 2 FLOPs each, then 2 bias additions
    assert estimate.count_flops(model) == 2 * 10 * 2 + 2


def test_convolution_flops_without_bias():
    import keras

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs))
    # every one of 8 x 8 x 4 outputs takes 3 x 3 x 3 multiply-adds
    assert estimate.count_flops(model) == 8 * 8 * 4 * 27 * 2


def test_depthwise_convolution_is_counted():
    import keras

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(inputs))
    # CancerNet's separable convolutions rely on it: 4 x 4 x 3 outputs of 3 x 3 multiply-adds each
    assert estimate.count_flops(model) == 4 * 4 * 3 * 9 * 2


@pytest.fixture
def toy(monkeypatch):
    """Round-number assumptions, so that the expected hours can be worked out by hand."""
    kinds = ("small", "dense_small", "dense_large", "depthwise_large")
    monkeypatch.setattr(estimate, "GPUS", {"toy": {"peak": 1e12, "cores": 8, **{k: 0.5 for k in kinds}}})
    monkeypatch.setattr(estimate, "HOST", {"fast": 1e9, "slow": 100, "png": 500})
    monkeypatch.setattr(estimate, "PARALLEL", {"png"})
    monkeypatch.setattr(estimate, "EPOCH_OVERHEAD_S", 1)
    monkeypatch.setattr(estimate, "RUN_OVERHEAD_S", 10)
    monkeypatch.setattr(estimate, "NOTEBOOK_OVERHEAD_S", 100)
    monkeypatch.setattr(estimate, "EXPECTED_EPOCHS", 10)
    return {"toy@50": 1e9}  # forward FLOPs per image


def test_estimate_arithmetic_on_a_made_up_workload(toy):
    # 5e11 FLOP/s. Per epoch: train 1,000 x 3e9 = 6 s, validation 500 x 1e9 = 1 s, overhead 1 s;
    # 10 of 50 epochs (early stopping) = 80 s; prediction 250 x 1e9 = 0.5 s; run overhead 10 s.
    # Two runs = 181 s; PNG decoding 1,000 at 500/s x (8 cores / 2) = 0.5 s; notebook 100 s.
    job = Job("toy@50", runs=2, epochs=50, train=1000, val=500, predict=250, feed="fast", val_feed="fast")
    table = estimate.estimate("toy", {"nb": Notebook((job,), ((1000, "png"),), "made up")}, toy)
    row = table.loc["nb"]
    assert row["hours"] == pytest.approx(281.5 / 3600, rel=1e-12)
    # every epoch: 50 x 8 s + 0.5 + 10 = 410.5 per run
    assert row["hours_cap"] == pytest.approx((2 * 410.5 + 0.5 + 100) / 3600, rel=1e-12)
    assert row["train_images"] == 2 * 10 * 1000
    assert row["flops"] == pytest.approx(2 * 1e9 * (10 * (3 * 1000 + 500) + 250))
    assert row["limited_by"] == "GPU compute" and row["note"] == "made up"


def test_a_slow_host_and_a_frozen_backbone(toy):
    # frozen: 1,000 x 1e9 = 2 s of GPU, but the host feeds 100/s: 10 s per epoch
    job = Job("toy@50", runs=1, epochs=3, train=1000, val=0, frozen=True, early_stop=False, feed="slow")
    cost = estimate.notebook_cost(Notebook((job,)), toy, "toy")
    assert cost["host_s"] == 30 and cost["gpu_s"] == 0
    assert cost["seconds"] == 30 + 3 * 1 + 10 + 100
    assert cost["flops"] == 3 * 1000 * 1e9


def test_every_notebook_has_a_row():
    folder = Path(__file__).resolve().parents[1] / "notebooks"
    names = sorted(p.stem for p in folder.glob("[0-9][0-9]_*.ipynb"))
    assert len(names) == 19 and names == list(estimate.profile_workload())
    for gpu in estimate.GPUS:
        table = estimate.estimate(gpu)
        assert list(table.index) == names
        assert ((table["hours"] > 0) & (table["hours"] <= table["hours_cap"])).all()
        assert all(math.isfinite(h) for h in table["hours_cap"])


def test_flops_file_holds_every_model_of_the_workload():
    flops = estimate.load_flops()
    assert set(estimate.needed_keys()) <= set(flops)
    # published: ResNet50 at 224 px is ~4.1 G multiply-adds
    assert 7.5e9 < flops["resnet50_gap@224"] < 8.5e9
    # a bigger input costs more, never less
    assert flops["cancernet@50"] < flops["cancernet@75"] < flops["cancernet@224"]


def test_unknown_gpu_is_named():
    with pytest.raises(ValueError, match="unknown GPU 'h100'; known: t4, a100"):
        estimate.estimate("h100")


def test_model_keys_are_parsed():
    key = "cancernet@50 filters=[[16],[32,32]] kernel_size=5"
    assert estimate.parse_key(key) == ("cancernet", 50, {"filters": [[16], [32, 32]], "kernel_size": 5})


def test_table_markdown_says_estimate_and_has_a_total():
    text = estimate.table_markdown()
    lines = text.splitlines()
    assert len(lines) == 2 + 19 + 1 and lines[-1].startswith("| **total**")
    assert "T4 h" in lines[0] and "A100 h" in lines[0]


# --- profiles: the workload of any profile, and the colab budget -----------------------------------

NOTEBOOKS = list(estimate.profile_workload())
IDC_NOTEBOOKS = [n for n in NOTEBOOKS if n not in ("16_thyroid_backbones", "17_thyroid_domain_shift")]


def test_colab_fits_a_class_on_one_t4():
    """By the estimate (computed, so deterministic): every IDC notebook within ~20 min, the series
    within ~3 h on one T4 with the whole Kaggle set."""
    table = estimate.estimate("t4", profile="colab")
    minutes = table["hours"] * 60
    assert list(table.index) == NOTEBOOKS
    assert minutes[IDC_NOTEBOOKS].max() <= estimate.COLAB_NOTEBOOK_MINUTES, minutes.round(1).to_dict()
    assert table["hours"].sum() <= estimate.COLAB_SERIES_HOURS
    # the whole set, capped at the profile's 40,000 patches: 28,000 balanced training patches
    jobs = estimate.profile_workload("colab")["02_vgg_style"].jobs
    assert [(j.runs, j.epochs, j.train, j.val, j.predict) for j in jobs] == [(1, 8, 28_000, 6_000, 12_000)]
    # the maps of 15 score every patch of the whole set's test patients, whatever the cap
    assert estimate.profile_workload("colab")["15_slide_heatmaps"].jobs[0].predict == 39_646 * 3


def test_the_colab_profile_has_the_keys_of_the_others():
    from helpers import config
    from helpers.data import source

    assert all(config.PROFILES[p].keys() == config.PROFILES["full"].keys() for p in config.PROFILES)
    cfg = source.resolve("colab", data_dir=config.SAMPLE_DIR)
    assert (cfg.epochs, cfg.sample_size, cfg.seeds, cfg.weights) == (8, 40_000, 1, "imagenet")


def test_every_profile_has_settings_and_a_table():
    from helpers import config

    assert set(estimate.SEARCH) == set(config.PROFILES)
    for profile in config.PROFILES:
        table = estimate.estimate("t4", profile=profile)
        assert list(table.index) == NOTEBOOKS and (table["hours"] > 0).all()
    with pytest.raises(ValueError, match=r"no estimate for profile 'huge'; known: colab, cpu, full, smoke"):
        estimate.estimate("t4", profile="huge")


def test_the_full_profile_workload():
    assert estimate.split_sizes(estimate.PATCHES, estimate.POSITIVES) == (112_552, 39_646, 39_646)
    assert estimate.split_sizes(estimate.PATCHES, estimate.POSITIVES, 40_000) == (28_000, 6_000, 6_000)
    # the sample, capped: 70% balanced for training, 15% each for validation and test
    assert estimate.split_sizes(estimate.SAMPLE_PATCHES, estimate.SAMPLE_POSITIVES, 1000) == (700, 150, 150)
    assert estimate.fold_sizes(estimate.PATCHES, 5) == (190_302, 31_717, 55_505)
    assert estimate.fold_sizes(estimate.PATCHES, 2, 40_000) == (17_143, 2_857, 20_000)
    full = estimate.profile_workload("full")
    assert sum(j.runs for j in full["08_optimizers"].jobs) == 21 and full["08_optimizers"].note.endswith("= 21 runs")
    assert sum(j.runs for j in full["09_regularization"].jobs) == 24
    smoke = estimate.profile_workload("smoke")
    assert sum(j.runs for j in smoke["09_regularization"].jobs) == 6  # one L2 value in smoke: 4 + 2 arms


def test_notebook_18_follows_its_selection():
    nb = estimate.best_recipe(17_500, folds=2, epochs=3, cap=7_000, candidates=("tta", "stain_macenko", "ema"))
    train, val, test = estimate.fold_sizes(14_000, 2, 7_000)  # the development patients: 4/5
    assert (train, val, test) == (3_000, 500, 3_500)
    recal = val + 20 * 64  # careful and best recalibrate BatchNorm before each validation
    runs = {}
    for j in nb.jobs:
        runs[(j.model, j.feed, j.train)] = runs.get((j.model, j.feed, j.train), 0) + j.runs
    # careful: the loop, then per seed itself and its two trained candidates (tta is a decision), on 2 folds;
    # best on the same folds; then each on the lockbox once per seed (capped: the folds' sizes)
    assert runs == {('cancernet@50 head="gap"', "histology_aug", train): (1 + 2 * 3) * 2 + 2,
                    ("cancernet@50", "memory", train): 2 * 2 + 2}
    assert all(j.epochs == 3 and j.val == recal and j.predict == 8 * (val + test) for j in nb.jobs)
    assert nb.data == ((17_500, "pil"), (2 * 2 * 7_000, "macenko"))
    assert nb.note.startswith("careful's fold loop, then careful, 2 trained candidate(s) of 3 and best_v4 on 2")
    whole = estimate.best_recipe(10_000, folds=5, epochs=None, cap=None, candidates=("tta",))
    assert {j.epochs for j in whole.jobs} == {40, 20}  # careful's and best's own
    assert {(j.train, j.predict) for j in whole.jobs if j.runs == 2} == {(8_000 - 914, 8 * (914 + 2_000))}


def test_ingredient_costs_and_settings_match_their_sources():
    """The mirrored tables agree with the modules the notebooks read."""
    import json as json_module

    from helpers import config
    from helpers.recipes import recipe
    from helpers.studies import tuning

    def cost(name):
        options = recipe.INGREDIENTS[name]
        if recipe.decision_only(name):
            return "decision"
        if options.get("head") == "gap":
            return "gap"
        if options.get("augment") == "histology":
            return "histology"
        if "recalibrate_bn" in options:
            return "recal"
        if options.get("ensemble", 1) > 1:
            return "ensemble"
        if options.get("stain", "none") != "none":
            return options["stain"]
        return "breakhis" if options.get("pretrain") == "breakhis" else "plain"

    assert {name: cost(name) for name in recipe.INGREDIENTS} == estimate.INGREDIENT_COST
    assert (estimate.RECIPE_EPOCHS, estimate.RECIPE_BATCH) == (recipe.Recipe().epochs, recipe.Recipe().batch_size)
    assert estimate.CAREFUL_EPOCHS == recipe.get("careful").epochs
    assert {p: (b.max_trials, b.epochs, b.sample_size) for p, b in tuning.BUDGETS.items()} == estimate.SEARCH
    assert set(tuning.BUDGETS) == set(config.PROFILES)
    cells = json_module.loads((Path(__file__).resolve().parents[1] / "notebooks" / "18_best_recipe.ipynb").read_text())
    source = "".join("".join(c["source"]) for c in cells["cells"] if c["cell_type"] == "code")
    assert json_module.dumps(list(estimate.SMOKE_CANDIDATES)) in source  # notebook 18's lists
    squeezed = source.replace(" ", "").replace("\n", "")
    assert json_module.dumps(list(estimate.FULL_CANDIDATES)).replace(" ", "") in squeezed
    assert 'light = cfg.profile in ("smoke", "colab")' in source  # the profiles that take them
    assert f"min(cfg.sample_size, {estimate.NOTEBOOK_18_CAP:_})" in source


def test_flops_of_an_uncounted_size_scale_with_the_area():
    flops = {"m@100": 400.0, "m@200": 1_000.0, "m@100 head=\"gap\"": 7.0}
    assert estimate.image_flops("m@100", flops) == 400.0
    assert estimate.image_flops("m@50", flops) == 100.0  # from the nearest size, 100 px: a quarter
    assert estimate.image_flops("m@300", flops) == 2_250.0
    assert estimate.image_flops('m@50 head="gap"', flops) == 1.75
    with pytest.raises(KeyError, match=r"no FLOPs for model 'other@50' in flops.json: python -m helpers"):
        estimate.image_flops("other@50", flops)


def test_colab_links_from_any_spelling_of_a_github_repository():
    links = estimate.colab_links("https://github.com/me/idc-notebooks")
    assert list(links) == NOTEBOOKS
    assert links["00_data"] == ("https://colab.research.google.com/github/me/idc-notebooks/blob/main/"
                                "notebooks/00_data.ipynb")
    for spelling in ("https://github.com/me/idc-notebooks.git", "git@github.com:me/idc-notebooks.git",
                     "github.com/me/idc-notebooks/", "me/idc-notebooks", " http://www.github.com/me/idc-notebooks "):
        assert estimate.colab_links(spelling) == links
    branch = estimate.colab_links("me/idc.notebooks", branch="dev")["18_best_recipe"]
    assert branch == "https://colab.research.google.com/github/me/idc.notebooks/blob/dev/notebooks/18_best_recipe.ipynb"
    for bad in ("https://gitlab.com/me/x", "gitlab.com/me", "me", "https://github.com/me", "",
                "github.com/me/x/tree/y"):
        with pytest.raises(ValueError, match=f"not a GitHub repository: {bad!r}"):
            estimate.colab_links(bad)


def test_docs_colab_is_what_the_estimate_writes():
    page = Path(__file__).resolve().parents[1] / "docs" / "colab.md"
    assert page.read_text() == estimate.colab_markdown(), \
        "regenerate: python -m helpers.tools.estimate --colab-doc > docs/colab.md"
    text = estimate.colab_markdown("https://github.com/me/idc-notebooks")
    assert "(https://colab.research.google.com/github/me/idc-notebooks/blob/main/notebooks/09_regularization.ipynb)" \
        in text
    assert "git clone -q --depth 1 https://github.com/me/idc-notebooks /content/idc" in text
    assert "an estimate, not a measurement" in text and "| **total** |  | **2.0 h** |" in text


def test_the_command_line_names_the_profile_or_fails_in_one_line(capsys):
    assert estimate.main(["--profile", "colab"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ESTIMATED hours with PROFILE=colab on one GPU (an estimate, not a measurement):")
    assert estimate.main(["--profile", "huge"]) == 2
    assert capsys.readouterr().err == "error: no estimate for profile 'huge'; known: colab, cpu, full, smoke\n"
    assert estimate.main(["--colab-links", "me/x"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 19
    assert lines[0] == "00_data  https://colab.research.google.com/github/me/x/blob/main/notebooks/00_data.ipynb"
