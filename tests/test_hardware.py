"""The GPU switches and the distribution strategy, exercised on this CPU."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from helpers import hardware, models, train


def test_a_cpu_gets_neither_switch_and_a_gpu_gets_both(monkeypatch):
    monkeypatch.delenv("IDC_MIXED_PRECISION", raising=False)
    monkeypatch.delenv("IDC_XLA", raising=False)
    assert hardware.choose(0) == hardware.Settings("cpu", 0, False, False, "default")
    assert hardware.choose(1) == hardware.Settings("gpu", 1, True, True, "default")
    # Several GPUs: mirrored, and XLA off as Keras has it under a strategy.
    assert hardware.choose(4) == hardware.Settings("gpu", 4, True, False, "mirrored")
    assert hardware.choose(0, tpu=True) == hardware.Settings("tpu", 0, True, False, "tpu")


def test_each_switch_can_be_turned_off_or_forced(monkeypatch):
    monkeypatch.delenv("IDC_XLA", raising=False)
    assert hardware.choose(1, mixed_precision=False).mixed_precision is False
    assert hardware.choose(1, xla=False).xla is False
    assert hardware.choose(0, mixed_precision=True).mixed_precision is True
    monkeypatch.setenv("IDC_MIXED_PRECISION", "0")
    monkeypatch.setenv("IDC_XLA", "off")
    assert hardware.choose(1) == hardware.Settings("gpu", 1, False, False, "default")
    assert hardware.choose(1, mixed_precision=True).mixed_precision is True, "an argument beats the variable"
    monkeypatch.setenv("IDC_XLA", "maybe")
    with pytest.raises(ValueError, match="IDC_XLA='maybe'"):
        hardware.choose(1)
    with pytest.raises(ValueError, match="gpus"):
        hardware.choose(-1)


def test_this_machine_runs_on_one_replica_without_switches(monkeypatch):
    monkeypatch.delenv("IDC_MIXED_PRECISION", raising=False)
    monkeypatch.delenv("IDC_XLA", raising=False)
    settings = hardware.setup()
    assert (settings.device, settings.mixed_precision, settings.xla, settings.strategy) == \
        ("cpu", False, False, "default")
    assert hardware.replicas() == 1 and hardware.global_batch(64) == 64
    assert "strategy default (1 replica(s))" in hardware.describe()
    with pytest.raises(ValueError, match="batch size"):
        hardware.global_batch(0)
    with pytest.raises(ValueError, match="unknown strategy 'ring'"):
        hardware.make_strategy("ring")


def _bright_or_dark(n=128, size=16, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.uniform(0, 90, (n, size, size, 3)) + 150 * y[:, None, None, None]).astype("float32")
    return x, keras.utils.to_categorical(y, 2)


def test_mixed_precision_computes_in_float16_and_answers_in_float32(tmp_path):
    try:
        hardware.setup(mixed_precision=True)
        model = models.build_model("cancernet", image_size=16)
        assert model.get_layer("block1_sepconv1").compute_dtype == "float16"
        assert model.get_layer("block1_sepconv1").variable_dtype == "float32"
        assert model.get_layer("predictions").compute_dtype == "float32"
        x, y = _bright_or_dark()
        train.compile_model(model, "adam", 1e-3)
        history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        assert model.predict(x[:4], verbose=0).dtype == np.float32
    finally:
        hardware.setup(mixed_precision=False)
    assert models.build_model("cancernet", image_size=16).get_layer("block1_sepconv1").compute_dtype == "float32"


def test_mixed_precision_reaches_the_backbone_layers_and_their_maps():
    from helpers import cam

    try:
        hardware.setup(mixed_precision=True)
        model = models.build_model("mobilenet_v2", image_size=32, alpha=0.35)
        assert {layer.compute_dtype for layer in models.backbone_layers(model)} == {"float16"}
        assert model.get_layer("predictions").compute_dtype == "float32"
        x = models.preprocess_for("mobilenet_v2")(_bright_or_dark(n=4, size=32)[0])
        maps = cam.grad_cam(model, x)
        assert maps.maps.dtype == np.float32 and np.isfinite(maps.maps).all() and maps.maps.max() <= 1
        assert maps.layer.layer in models.backbone_layers(model)
    finally:
        hardware.setup(mixed_precision=False)


def test_xla_is_a_switch_of_the_compile_step():
    x, y = _bright_or_dark()
    model = train.compile_model(models.build_model("cancernet", image_size=16), "adam", 1e-3, xla=True)
    assert model.jit_compile is True
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert train.compile_model(models.build_model("cancernet", image_size=16)).jit_compile is False


MIRRORED = textwrap.dedent("""
    import json, numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from helpers import hardware, models, train
    settings = hardware.setup(strategy="mirrored")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64)
    x = (rng.uniform(0, 90, (64, 16, 16, 3)) + 150 * y[:, None, None, None]).astype("float32")
    batch = hardware.global_batch(16)
    ds = tf.data.Dataset.from_tensor_slices((x, keras.utils.to_categorical(y, 2))).batch(batch)
    model = models.build_model("cancernet", image_size=16)
    before = [w.numpy().copy() for w in model.trainable_weights]
    result = train.fit(model, ds, ds, RUN_DIR, train.Training(learning_rate=1e-3), epochs=1, verbose=0)
    after = [w.numpy() for w in model.trainable_weights]
    print(json.dumps({"strategy": type(model.distribute_strategy).__name__,
                      "replicas": hardware.replicas(), "batch": batch, "xla": settings.xla,
                      "mirrored": type(model.trainable_weights[0].value).__name__,
                      "changed": any(not np.allclose(a, b) for a, b in zip(before, after)),
                      "epochs": result.epochs_run}))
""")


def test_mirrored_strategy_trains_on_two_logical_cpu_devices(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    script = MIRRORED.replace("RUN_DIR", repr(str(tmp_path / "run")))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["strategy"] == "MirroredStrategy" and seen["replicas"] == 2
    assert seen["batch"] == 32, "16 per replica, two replicas"
    assert seen["mirrored"] == "MirroredVariable", "the weights were created in the strategy's scope"
    assert seen["changed"] and seen["epochs"] == 1 and seen["xla"] is False
