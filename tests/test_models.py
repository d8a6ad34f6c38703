"""The model registry: every model builds and predicts, the seed's layer settings,
freezing, weights from files, and the offline ImageNet message."""

import os
import socket
import time
import urllib.error

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import tensorflow as tf

from helpers import models  # noqa: E402
from helpers.models import MODELS, WeightsError, build_model, count_params  # noqa: E402

PRETRAINED = [n for n in models.IDC_MODELS if MODELS[n].pretrained]


@pytest.fixture(scope="module")
def built():
    """Each model at its default size with weights=None, built once for the module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_model(name)
        return cache[name]
    return get


def images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


def backbone_weights(model):
    return [w for layer in models.backbone_layers(model) for w in layer.get_weights()]


def same_backbone(model, weights):
    ours = backbone_weights(model)
    return len(ours) == len(weights) and all(np.array_equal(x, y) for x, y in zip(ours, weights))


# --- every model --------------------------------------------------------------

@pytest.mark.parametrize("name", models.IDC_MODELS)
def test_builds_and_predicts_two_probabilities(built, name):
    model = built(name)
    size = models.input_size(name)
    assert size == MODELS[name].default_size >= MODELS[name].min_size
    assert model.input_shape == (None, size, size, 3)
    x = images(2, size)
    prep = models.preprocess_for(name)
    if prep is not None:
        x = prep(x)
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 2) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    assert not isinstance(model, keras.Sequential)


@pytest.mark.parametrize("name", models.IDC_MODELS)
def test_models_are_flat_and_preprocessing_is_outside(built, name):
    model = built(name)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    backbone = models.backbone_layers(model)
    if MODELS[name].pretrained:
        # image -> the application's layers -> the head, in one graph
        assert model.layers[1:1 + len(backbone)] == backbone
        assert model.layers[1 + len(backbone)].name in ("flatten", "gap")
        assert models.preprocess_for(name) is getattr(
            keras.applications, name).preprocess_input
    else:
        assert backbone == []
        assert models.preprocess_for(name) is None
        assert any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers)


@pytest.mark.parametrize("name, inner", [("resnet50", "conv4_block6_out"), ("xception", "block13_sepconv2_act")])
def test_an_inner_backbone_layer_is_a_tensor_of_the_model(built, name, inner):
    # What Grad-CAM needs: a feature map deep in the backbone and the prediction, from one graph.
    model = built(name)
    probe = keras.Model(model.inputs, [model.get_layer(inner).output, model.output])
    x = tf.constant(models.preprocess_for(name)(images(2, models.input_size(name))))
    with tf.GradientTape() as tape:
        features, y = probe(x, training=False)
        score = tf.reduce_sum(y[:, 1])
    grads = tape.gradient(score, features)
    assert grads is not None and grads.shape == features.shape and len(features.shape) == 4
    np.testing.assert_allclose(y, model(x, training=False), atol=1e-6)


def test_count_params_adds_up(built):
    model = built("cancernet")
    counts = count_params(model)
    assert counts["total"] == model.count_params() == counts["trainable"] + counts["non_trainable"]
    assert counts["non_trainable"] == 2 * (32 + 64 * 2 + 128 * 3 + 256)  # BN moving mean/var


@pytest.mark.parametrize("name", PRETRAINED)
def test_preprocess_runs_inside_tf_data(name):
    size = models.input_size(name)
    ds = tf.data.Dataset.from_tensor_slices(images(4, size)).batch(2).map(models.preprocess_for(name))
    batch = next(iter(ds)).numpy()
    assert batch.shape == (2, size, size, 3) and np.isfinite(batch).all()
    if name != "resnet50":  # "tf" mode scales to [-1, 1]; ResNet50 subtracts the ImageNet means
        assert batch.min() >= -1 and batch.max() <= 1


# --- the seed's settings ------------------------------------------------------

def test_resnet50_head_matches_the_seed(built):
    model = built("resnet50")
    backbone = models.backbone_layers(model)
    assert len(backbone) == 174  # ResNet50's layers, its input excluded
    assert backbone[-1].name == "conv5_block3_out" and backbone[-1].output.shape == (None, 2, 2, 2048)
    assert sum(layer.count_params() for layer in backbone) == 23_587_712  # the seed's summary
    head = model.layers[1 + len(backbone):]
    assert [layer.count_params() for layer in head if isinstance(layer, keras.layers.Dense)] == [2_097_408, 514]
    assert [layer.count_params() for layer in head if isinstance(layer, keras.layers.BatchNormalization)] == [1_024]
    kinds = [type(layer).__name__ for layer in head]
    assert kinds == ["Flatten", "Dense", "Activation", "BatchNormalization", "Dense", "Activation"]
    table = models.head_table(model)  # notebook 03's table: the backbone in one row, then the head
    assert table.index[0] == "resnet50 (174 layers, up to conv5_block3_out)"
    assert table.iloc[0].to_dict() == {"kind": "backbone", "output": "2 × 2 × 2048", "parameters": 23_587_712,
                                       "trainable": 23_534_592}  # BatchNorm's moving statistics do not train
    assert list(table["kind"].iloc[1:]) == kinds and table.loc["fc", "parameters"] == 2_097_408


def test_cancernet_structure(built):
    model = built("cancernet")
    seps = [layer for layer in model.layers if isinstance(layer, keras.layers.SeparableConv2D)]
    assert [layer.filters for layer in seps] == [32, 64, 64, 128, 128, 128]
    assert all(layer.kernel_size == (3, 3) and layer.padding == "same" for layer in seps)
    rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert sorted(rates) == [0.25, 0.25, 0.25, 0.5]
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pools) == 3
    # each conv is followed by ReLU then BatchNormalization, as in the seed
    for sep in seps:
        i = model.layers.index(sep)
        assert type(model.layers[i + 1]).__name__ == "Activation"
        assert type(model.layers[i + 2]).__name__ == "BatchNormalization"


def test_vgg_style_structure(built):
    model = built("vgg_style")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 32, 64, 64, 128, 128, 256, 256, 256, 256]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 5


def test_gradients_reach_the_last_conv(built):
    # Grad-CAM needs the gradient of the IDC score w.r.t. a conv feature map.
    model = built("cancernet")
    grad_model = keras.Model(model.inputs, [model.get_layer("block3_sepconv3").output, model.output])
    x = tf.constant(images(1, 50))
    with tf.GradientTape() as tape:
        conv, pred = grad_model(x, training=False)
        score = pred[:, 1]
    grads = tape.gradient(score, conv)
    assert grads is not None and grads.shape == conv.shape


# --- freezing -----------------------------------------------------------------

def test_fine_tune_at_freezes_the_first_layers_of_the_backbone():
    model = build_model("xception", fine_tune_at=100)
    backbone = models.backbone_layers(model)
    assert len(backbone) == 131  # Xception's layers, its input excluded
    assert backbone[99].name == "block11_sepconv2" and backbone[100].name == "block11_sepconv2_bn"
    assert not any(layer.trainable for layer in backbone[:100])
    assert all(layer.trainable for layer in backbone[100:])  # from scratch: BN too
    assert all(layer.trainable for layer in model.layers if layer not in backbone)
    with pytest.raises(ValueError, match="0..131"):
        build_model("xception", fine_tune_at=132)


def test_head_table_counts_what_trains(built):
    table = models.head_table(build_model("xception", fine_tune_at=100))
    assert table.iloc[0]["parameters"] == 20_861_480  # Xception without its top
    assert table.iloc[0]["trainable"] == 8_941_808  # the layers from block11_sepconv2_bn on
    assert table.loc["logits"].to_dict() == {"kind": "Dense", "output": "2", "parameters": 4_098, "trainable": 4_098}
    with pytest.raises(ValueError, match="no backbone"):
        models.head_table(built("cancernet"))


def test_without_weights_everything_trains(built):
    for name in ("mobilenet_v2", "cancernet"):
        assert all(layer.trainable for layer in built(name).layers)


def test_fine_tune_at_on_cancernet_freezes_the_first_block():
    model = build_model("cancernet", fine_tune_at=5)
    frozen = [layer.name for layer in model.layers if not layer.trainable]
    assert frozen == ["block1_sepconv1", "block1_relu1", "block1_bn1", "block1_pool", "block1_dropout"]


def test_fine_tune_at_out_of_range():
    with pytest.raises(ValueError, match="fine_tune_at"):
        build_model("cancernet", fine_tune_at=1000)


# --- weights from files -------------------------------------------------------

@pytest.fixture(scope="module")
def trained_mobilenet(tmp_path_factory):
    """A MobileNetV2 'pretrained elsewhere': perturbed weights, saved three ways."""
    d = tmp_path_factory.mktemp("weights")
    model = build_model("mobilenet_v2")
    rng = np.random.default_rng(1)
    for w in model.weights:
        w.assign(w.numpy() + rng.normal(0, 0.01, w.shape).astype(w.dtype))
    model.save(d / "breakhis.keras")
    model.save_weights(d / "breakhis.weights.h5")
    # the bare application with the same weights, as keras.applications builds it
    bare = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(50, 50, 3))
    bare.set_weights(backbone_weights(model))
    bare.save_weights(d / "backbone.weights.h5")
    return model, d


@pytest.mark.parametrize("fname", ["breakhis.keras", "breakhis.weights.h5", "backbone.weights.h5"])
def test_weights_from_a_file(trained_mobilenet, fname):
    source, d = trained_mobilenet
    model = build_model("mobilenet_v2", weights=d / fname)
    assert same_backbone(model, backbone_weights(source))
    assert not same_weights(model.get_layer("logits"), source.get_layer("logits"))  # the head starts fresh
    # pretrained and fine_tune_at=None: the backbone is frozen, the new head trains
    assert not any(layer.trainable for layer in models.backbone_layers(model))
    assert model.get_layer("logits").trainable
    # frozen BatchNorm stays in inference mode while training
    x = models.preprocess_for("mobilenet_v2")(images(4, 50))
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), atol=1e-6)


def test_weights_from_a_file_with_fine_tune_at(trained_mobilenet, tmp_path):
    source, d = trained_mobilenet
    model = build_model("mobilenet_v2", weights=d / "breakhis.keras", fine_tune_at=100)
    layers_ = models.backbone_layers(model)
    assert not any(layer.trainable for layer in layers_[:100])
    bn = keras.layers.BatchNormalization
    assert all(layer.trainable for layer in layers_[100:] if not isinstance(layer, bn))
    # Keras 3: a frozen BatchNorm runs in inference mode under fit()'s training=True, so
    # the pretrained BatchNorm layers are frozen ...
    assert not any(layer.trainable for layer in layers_ if isinstance(layer, bn))
    x = models.preprocess_for("mobilenet_v2")(images(4, 50))
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), atol=1e-6)
    # ... and that survives a checkpoint: a resumed run trains the same way.
    model.save(tmp_path / "checkpoint.keras")
    again = keras.models.load_model(tmp_path / "checkpoint.keras")
    np.testing.assert_allclose(again(x, training=True), again(x, training=False), atol=1e-6)
    assert count_params(again) == count_params(model)


def nested_mobilenet():
    """A MobileNetV2 model as this registry built it before models were flat: the
    application as one nested layer named "backbone", then the GAP head."""
    keras.utils.set_random_seed(3)
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(50, 50, 3),
                                              name="backbone")
    inputs = keras.Input((50, 50, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(backbone(inputs))
    x = keras.layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, keras.layers.Activation("softmax", name="predictions")(x), name="mobilenet_v2")


def test_weights_from_a_model_saved_with_a_nested_backbone(tmp_path):
    old = nested_mobilenet()
    old.save(tmp_path / "old.keras")
    model = build_model("mobilenet_v2", weights=tmp_path / "old.keras")
    assert same_backbone(model, old.get_layer("backbone").get_weights())
    old.save_weights(tmp_path / "old.weights.h5")  # its layers cannot be matched without the nesting
    with pytest.raises(WeightsError, match="nested.*.keras file"):
        build_model("mobilenet_v2", weights=tmp_path / "old.weights.h5")


def test_missing_weights_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "breakhis.keras"
    with pytest.raises(WeightsError, match="breakhis.keras") as err:
        build_model("mobilenet_v2", weights=path)
    assert str(path) in str(err.value)


def test_a_file_of_another_model_is_refused(tmp_path, built):
    built("cancernet").save(tmp_path / "cancernet.keras")
    with pytest.raises(WeightsError, match="cancernet.keras"):
        build_model("mobilenet_v2", weights=tmp_path / "cancernet.keras")


def test_cancernet_from_its_own_file(tmp_path, built):
    source = built("cancernet")
    source.save(tmp_path / "c.keras")
    model = build_model("cancernet", weights=tmp_path / "c.keras")
    assert same_weights(model, source)


# --- ImageNet offline ---------------------------------------------------------

OFFLINE_ERRORS = {
    "no-dns": urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
    "stalled": TimeoutError("timed out"),
}


@pytest.fixture(params=list(OFFLINE_ERRORS))
def offline(request, tmp_path, monkeypatch):
    """An empty Keras cache and a download that fails as it does without a network.

    keras.applications call keras.src.utils.file_utils.get_file, which downloads
    with the urlretrieve it imported from urllib.request.
    """
    from keras.src.backend import config
    from keras.src.utils import file_utils

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras"))
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append((url, socket.getdefaulttimeout()))
        raise OFFLINE_ERRORS[request.param]
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    return tmp_path / "keras", calls


def test_imagenet_offline_fails_at_once_with_the_three_choices(offline):
    _, calls = offline
    timeout = socket.getdefaulttimeout()
    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        build_model("mobilenet_v2", weights="imagenet")
    assert time.perf_counter() - start < 30
    assert len(calls) == 1, "the download was never tried"
    assert calls[0][1] == models.DOWNLOAD_TIMEOUT  # a stalled connection cannot hang
    message = str(err.value)
    for word in ("imagenet", "None", "path", "mobilenet_v2"):
        assert word in message
    assert socket.getdefaulttimeout() == timeout


def test_imagenet_from_the_cache_works_offline(offline):
    # The file Keras would have downloaded on an earlier, online run.
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    home, calls = offline
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(50, 50, 3))
    cached = home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    cached.parent.mkdir(parents=True)
    with h5py.File(cached, "w") as f:
        save_weights_to_hdf5_group(f, reference)
    with pytest.warns(UserWarning, match="input_shape"):  # 50 is not an ImageNet size: fine
        model = build_model("mobilenet_v2", weights="imagenet")
    assert not calls
    assert same_backbone(model, reference.get_weights())
    assert not any(layer.trainable for layer in models.backbone_layers(model))


def test_other_errors_are_not_blamed_on_the_network():
    with pytest.raises(ValueError, match="alpha") as err:
        build_model("mobilenet_v2", weights="imagenet", alpha=0.3)  # no such ImageNet variant
    assert not isinstance(err.value, WeightsError)


def test_imagenet_for_a_scratch_model_is_refused():
    with pytest.raises(WeightsError, match="cancernet"):
        build_model("cancernet", weights="imagenet")


# --- names and sizes ----------------------------------------------------------

def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        build_model("resnet51")
    for name in MODELS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="resnet51"):
        models.input_size("resnet51")


def test_too_small_image_size_names_the_minimum():
    with pytest.raises(ValueError, match="75") as err:
        build_model("inception_v3", image_size=50)
    assert "inception_v3" in str(err.value)


def test_input_size():
    assert models.input_size("xception") == 71
    assert models.input_size("inception_v3") == 75
    assert models.input_size("cancernet") == models.input_size("mobilenet_v2") == 50
    assert models.input_size("xception", 50) == 71  # raised to the minimum, as the seed did
    assert models.input_size("mobilenet_v2", 96) == 96


# --- it learns ----------------------------------------------------------------

def dark_or_light(rng, n, size=32):
    """Noisy images, class 1 light and class 0 dark: (images in [0, 255], labels)."""
    y = rng.integers(0, 2, n)
    x = np.where(y[:, None, None, None] == 1, 170.0, 80.0) + rng.normal(0, 30, (n, size, size, 3))
    return np.clip(x, 0, 255).astype("float32"), y


def test_cancernet_learns_a_separable_task():
    # Dark vs light noisy images. Scored with predict(), i.e. with BatchNorm's moving
    # statistics: with Keras' default momentum 0.99 they would still be near their
    # start (variance 1) after these 100 steps and every image would get one class.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    (x, y), (xt, yt) = dark_or_light(rng, 160), dark_or_light(rng, 128)
    y, yt = keras.utils.to_categorical(y, 2), keras.utils.to_categorical(yt, 2)
    model = build_model("cancernet", image_size=32)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    accuracy = (model.predict(xt, verbose=0).argmax(1) == yt.argmax(1)).mean()
    assert accuracy > 0.9


def test_batchnorm_momentum_suits_short_runs(built):
    bns = [layer for layer in built("cancernet").layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 7 and all(layer.momentum == models.BN_MOMENTUM == 0.9 for layer in bns)


def test_scratch_backbone_batchnorm_catches_up_in_a_short_run():
    # MobileNetV2's own BN momentum is 0.999: after a short run from scratch its moving
    # statistics were still near mean 0 / variance 1 and predict() gave one class for all.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    (x, y), (xt, yt) = dark_or_light(rng, 320), dark_or_light(rng, 128)
    x, xt = models.preprocess_for("mobilenet_v2")(x), models.preprocess_for("mobilenet_v2")(xt)
    model = build_model("mobilenet_v2", image_size=32, alpha=0.35)
    bns = [layer for layer in models.backbone_layers(model)
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.momentum <= models.BN_MOMENTUM for layer in bns)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    model.fit(x, keras.utils.to_categorical(y, 2), epochs=4, batch_size=16, verbose=0)
    predicted = model.predict(xt, verbose=0).argmax(1)
    assert len(set(predicted)) == 2, "one class for every image: stale BatchNorm statistics"
    assert (predicted == yt).mean() > 0.8


def test_pretrained_backbone_keeps_its_batchnorm_momentum(trained_mobilenet):
    _, d = trained_mobilenet
    model = build_model("mobilenet_v2", weights=d / "breakhis.keras")
    bns = [layer for layer in models.backbone_layers(model)
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 52 and all(layer.momentum == 0.999 for layer in bns)


def test_cancernet_variants_of_the_architecture_study():
    thin = build_model("cancernet", filters=((16,), (32, 32), (64, 64, 64), (64, 64, 64)))
    seps = [layer for layer in thin.layers if isinstance(layer, keras.layers.SeparableConv2D)]
    assert [layer.filters for layer in seps] == [16, 32, 32, 64, 64, 64, 64, 64, 64]
    assert thin.get_layer("block4_pool").output.shape[1:3] == (3, 3)  # 50 -> 25 -> 12 -> 6 -> 3
    for k in (2, 5):
        model = build_model("cancernet", kernel_size=k)
        assert model.get_layer("block1_sepconv1").kernel_size == (k, k)
    strided = build_model("cancernet", downsample="stride")
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in strided.layers)
    assert strided.get_layer("block1_sepconv1").strides == (2, 2)
    assert strided.get_layer("block2_sepconv2").strides == (1, 1)
    assert strided.get_layer("flatten").output.shape[1] == 7 * 7 * 128  # 50 -> 25 -> 13 -> 7
    with pytest.raises(ValueError, match="downsample"):
        build_model("cancernet", downsample="avg")


def test_cancernet_l2_and_dropout_options():
    plain = build_model("cancernet")
    assert not plain.losses
    penalised = build_model("cancernet", l2=1e-3)
    penalised(images(1, 50))
    assert len(penalised.losses) == 2 * 6 + 1  # depthwise + pointwise per conv, and the dense
    seed_bn = build_model("cancernet", bn_momentum=0.99)
    assert {layer.momentum for layer in seed_bn.layers
            if isinstance(layer, keras.layers.BatchNormalization)} == {0.99}
    no_drop = build_model("cancernet", block_dropout=0, dropout=0)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in no_drop.layers)


def test_recalibrated_batchnorm_matches_the_real_statistics():
    from helpers import train

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(2)
    (x, y), (xt, yt) = dark_or_light(rng, 192), dark_or_light(rng, 128)
    ds = tf.data.Dataset.from_tensor_slices((x, keras.utils.to_categorical(y, 2))).batch(32)
    model = build_model("cancernet", image_size=32)
    train.compile_model(model, "adam", 1e-3)
    model.fit(ds, epochs=1, verbose=0, shuffle=False)  # 6 steps: the moving statistics lag far behind
    stale = (model.predict(xt, verbose=0).argmax(1) == yt).mean()

    assert train.recalibrate_batchnorm(model, ds, batches=6) == 6
    probe = keras.Model(model.inputs, model.get_layer("block1_relu1").output)
    real = np.asarray(probe(x, training=False)).reshape(-1, 32)
    bn = model.get_layer("block1_bn1")
    np.testing.assert_allclose(np.asarray(bn.moving_mean), real.mean(0), rtol=0.05, atol=1e-3)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), real.var(0), rtol=0.25, atol=1e-4)
    assert bn.momentum == models.BN_MOMENTUM, "the momentum is restored"
    fresh = (model.predict(xt, verbose=0).argmax(1) == yt).mean()
    assert fresh > 0.9 and fresh > stale


def test_recalibration_averages_the_batch_statistics_exactly():
    from helpers import train

    keras.utils.set_random_seed(1)
    x = np.random.default_rng(3).uniform(0, 255, (80, 16, 16, 3)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(80))).batch(32)  # 32, 32 and a partial 16
    model = build_model("cancernet", image_size=16)
    probe = keras.Model(model.inputs, model.get_layer("block1_relu1").output)
    batches = [np.asarray(probe(x[i:i + 32], training=True)).reshape(-1, 32) for i in (0, 32, 64)]
    for _ in range(2):  # the second call reuses the traced graph
        assert train.recalibrate_batchnorm(model, ds, batches=5) == 3
        bn = model.get_layer("block1_bn1")
        np.testing.assert_allclose(np.asarray(bn.moving_mean), np.mean([b.mean(0) for b in batches], 0), rtol=1e-4)
        np.testing.assert_allclose(np.asarray(bn.moving_variance), np.mean([b.var(0) for b in batches], 0),
                                   rtol=1e-3)


def test_batchnorm_layers_skip_a_frozen_pretrained_backbone(trained_mobilenet):
    from helpers import train

    _, d = trained_mobilenet
    frozen = build_model("mobilenet_v2", weights=d / "breakhis.keras")
    assert not train.batchnorm_layers(frozen)  # its head has no BatchNorm
    scratch = build_model("mobilenet_v2")
    assert len(train.batchnorm_layers(scratch)) == sum(
        isinstance(layer, keras.layers.BatchNormalization) for layer in models.backbone_layers(scratch))


# --- the thyroid track's backbones ------------------------------------------------

@pytest.mark.parametrize("name, channels", [("vgg16", 512), ("vgg19", 512), ("resnet50_gap", 2048),
                                            ("resnet101", 2048), ("efficientnet_b7", 2560)])
def test_thyroid_backbones_have_a_gap_head(name, channels):
    model = build_model(name, image_size=32, normalize=([120.0, 110.0, 100.0], [400.0, 900.0, 1600.0]))
    assert name in models.THYROID_MODELS and name not in models.IDC_MODELS
    backbone = models.backbone_layers(model)
    start = model.layers.index(backbone[0])
    # image, the featurewise scaling (EfficientNet scales itself), the backbone, the head
    assert [layer.name for layer in model.layers[1:start]] == ([] if name == "efficientnet_b7" else ["featurewise"])
    assert model.layers[start:start + len(backbone)] == backbone
    assert model.layers[start + len(backbone)].name == "gap"
    assert backbone[-1].output.shape[-1] == channels
    assert isinstance(model.get_layer("gap"), keras.layers.GlobalAveragePooling2D)
    assert model.get_layer("logits").count_params() == 2 * channels + 2
    assert models.preprocess_for(name) is None  # the model scales its input itself
    y = np.asarray(model(images(2, 32), training=False))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)


def test_thyroid_featurewise_normalisation_is_inside_the_model():
    mean, variance = [120.0, 110.0, 100.0], [400.0, 900.0, 1600.0]
    model = build_model("vgg16", image_size=32, normalize=(mean, variance))
    x = np.full((1, 32, 32, 3), [140.0, 80.0, 180.0], dtype="float32")
    out = np.asarray(model.get_layer("featurewise")(x))
    np.testing.assert_allclose(out[0, 0, 0], [1.0, -1.0, 2.0], rtol=1e-5)
    # without statistics the model maps [0, 255] to [-1, 1]
    plain = build_model("vgg16", image_size=32)
    np.testing.assert_allclose(np.asarray(plain.get_layer("scale")(np.full((1, 2, 2, 3), 255.0)))[0, 0, 0], 1.0)


def test_efficientnet_gets_raw_pixels():
    # Keras' EfficientNet rescales [0, 255] itself: no scaling layer of ours in front
    model = build_model("efficientnet_b7", image_size=32, normalize=([1.0] * 3, [1.0] * 3))
    names = [layer.name for layer in model.layers]
    assert "featurewise" not in names and "scale" not in names
    first = models.backbone_layers(model)[0]  # EfficientNet's own Rescaling
    assert first is model.layers[1] and isinstance(first, keras.layers.Rescaling)
    assert first.scale == pytest.approx(1 / 255)


# --- what the lessons read from a model ----------------------------------------

def test_layer_table_gives_each_layers_output_and_parameters():
    inputs = keras.Input((8, 8, 4), name="image")
    conv = keras.layers.Conv2D(2, 3, name="conv")
    x = keras.layers.BatchNormalization(name="bn")(conv(inputs))
    model = keras.Model(inputs, keras.layers.Flatten(name="flat")(x))
    conv.trainable = False
    table = models.layer_table(model.layers)
    assert list(table.index) == ["conv", "bn", "flat"]  # the input layer left out
    assert table.to_dict("index") == {
        "conv": {"kind": "Conv2D", "output": "6 × 6 × 2", "parameters": 3 * 3 * 4 * 2 + 2, "trainable": 0},
        "bn": {"kind": "BatchNormalization", "output": "6 × 6 × 2", "parameters": 8, "trainable": 4},
        "flat": {"kind": "Flatten", "output": "72", "parameters": 0, "trainable": 0}}


def chain(*layers_):
    return keras.Sequential([keras.Input((32, 32, 3)), *layers_])


def test_receptive_field_grows_by_each_kernel_times_the_strides_before():
    conv = keras.layers.Conv2D
    assert models.receptive_field(chain(conv(1, 5))) == (5, 5)
    assert models.receptive_field(chain(conv(1, 3), conv(1, 3))) == (5, 5)  # two 3x3 see what one 5x5 sees
    assert models.receptive_field(chain(conv(1, (3, 1)), conv(1, (1, 3)))) == (3, 3)
    assert models.receptive_field(chain(conv(1, 3, dilation_rate=2))) == (5, 5)
    pooled = chain(conv(1, 3), keras.layers.MaxPooling2D(2, name="pool"), conv(1, 3), keras.layers.Flatten())
    assert models.receptive_field(pooled, "pool") == (4, 4)
    assert models.receptive_field(pooled) == (8, 8)  # after a stride of 2, a 3x3 adds 2 steps of 2 pixels
    with pytest.raises(ValueError, match="no layer 'nowhere'"):
        models.receptive_field(pooled, "nowhere")


def test_stack_table_compares_stacks_built_on_one_input():
    conv = keras.layers.Conv2D
    table = models.stack_table({"one 5x5": [conv(8, 5, padding="same")],
                                "two 3x3": [conv(8, 3, padding="same"), conv(8, 3, padding="same")],
                                "separable 3x3": [keras.layers.SeparableConv2D(8, 3, use_bias=False)]},
                               input_shape=(10, 10, 8))
    assert table.to_dict("index") == {
        "one 5x5": {"window": "5 × 5", "output": "10 × 10 × 8", "parameters": 5 * 5 * 8 * 8 + 8},
        "two 3x3": {"window": "5 × 5", "output": "10 × 10 × 8", "parameters": 2 * (3 * 3 * 8 * 8 + 8)},
        "separable 3x3": {"window": "3 × 3", "output": "8 × 8 × 8", "parameters": 3 * 3 * 8 + 8 * 8}}


def test_receptive_fields_of_vgg_style_blocks(built):
    model = built("vgg_style")
    windows = [models.receptive_field(model, f"block{b}_pool")[0] for b in range(1, 6)]
    assert windows == [6, 16, 36, 76, 156]  # from block 4 on, one unit sees more than the 50x50 patch
