"""helpers.estimate: FLOPs counted exactly, the estimate's arithmetic, its coverage and errors.

Big models are never built here: their FLOPs are read from helpers/flops.json.
"""

import math
from pathlib import Path

import pytest

from helpers import estimate
from helpers.estimate import Job, Notebook


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
    monkeypatch.setattr(estimate, "GPUS", {"toy": {"name": "toy", "peak": 1e12, "cores": 8}})
    kinds = ("small", "dense_small", "dense_large", "depthwise_large")
    monkeypatch.setattr(estimate, "UTILISATION", {"toy": {k: 0.5 for k in kinds}})
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
    assert len(names) == 19 and names == list(estimate.NOTEBOOKS) == list(estimate.WORKLOAD)
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
    with pytest.raises(ValueError, match="'h100'"):
        estimate.estimate("h100")
    with pytest.raises(ValueError, match="'v100'"):
        estimate.host_rate("png", "v100")


def test_model_keys_round_trip():
    key = estimate.model_key("cancernet", 50, filters=((16,), (32, 32)), kernel_size=5)
    assert key == "cancernet@50 filters=[[16],[32,32]] kernel_size=5"
    assert estimate.parse_key(key) == ("cancernet", 50, {"filters": [[16], [32, 32]], "kernel_size": 5})


def test_table_markdown_says_estimate_and_has_a_total():
    text = estimate.table_markdown()
    lines = text.splitlines()
    assert len(lines) == 2 + 19 + 1 and lines[-1].startswith("| **total**")
    assert "T4 h" in lines[0] and "A100 h" in lines[0]
