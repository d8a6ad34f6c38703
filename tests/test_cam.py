"""Class activation maps: they point where a model with a known response looks, in
functional and Sequential models alike, deep inside the registry's backbones, and
they equal Grad-CAM written out by hand; the figures built on them."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import tensorflow as tf

import matplotlib  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from helpers import cam, models  # noqa: E402

L = keras.layers
SIZE, SIDE, MARGIN = 32, 8, 2
HALF = SIZE // 2
QUADRANTS = {"top-left": (0, 0), "top-right": (0, 1), "bottom-left": (1, 0), "bottom-right": (1, 1)}


# --- a model whose response is known -----------------------------------------

def fixed(value):
    """An initializer that returns ``value``: the model must not depend on a seed."""
    def init(shape, dtype=None):
        return keras.ops.reshape(keras.ops.convert_to_tensor(value, "float32"), shape)
    return init


def corner_layers(head="gap", shrink=False):
    """Layers of a model that calls IDC on bright pixels and healthy on grey ones.

    "detect" is a 1x1 convolution with two channels: 0 is 1 on white and 0 on the
    grey (60) background, 1 the opposite (0.53 on grey). Max-pooling by 4 leaves an
    8x8 map. The logits weigh channel 0 +1 and channel 1 -1 for IDC (the reverse
    for healthy), through GlobalAveragePooling2D or, position by position, Flatten.
    ``shrink`` puts a layer without weights first (2x2 average pooling).
    """
    per_channel = np.array([[-1.0, 1.0], [1.0, -1.0]])  # rows: bright, dark; columns: classes
    kernel = np.zeros((1, 1, 3, 2))
    kernel[..., 0], kernel[..., 1] = 2 / (3 * 255), -2 / (3 * 255)
    pooled = SIZE // (2 if shrink else 1) // 4
    first = [L.AveragePooling2D(2, name="shrink")] if shrink else []
    flat = ([L.GlobalAveragePooling2D(name="gap")], per_channel) if head == "gap" else \
        ([L.Flatten(name="flatten")], np.tile(per_channel, (pooled * pooled, 1)))
    return first + [
        L.Conv2D(2, 1, activation="relu", name="detect", kernel_initializer=fixed(kernel),
                 bias_initializer=fixed([-1.0, 1.0])),
        L.MaxPooling2D(4, name="pool"),
        *flat[0],
        L.Dense(2, name="logits", kernel_initializer=fixed(flat[1]), bias_initializer="zeros"),
        L.Activation("softmax", name="predictions"),
    ]


def corner_model(head="gap", shrink=False):
    x = inputs = keras.Input((SIZE, SIZE, 3))
    for layer in corner_layers(head, shrink):
        x = layer(x)
    return keras.Model(inputs, x, name=f"corner_{head}")


def corner_image(quadrant):
    """Grey with a white square in ``quadrant``, ``MARGIN`` pixels from its corner."""
    image = np.full((SIZE, SIZE, 3), 60.0, "float32")
    top = MARGIN if QUADRANTS[quadrant][0] == 0 else SIZE - MARGIN - SIDE
    left = MARGIN if QUADRANTS[quadrant][1] == 0 else SIZE - MARGIN - SIDE
    image[top:top + SIDE, left:left + SIDE] = 255
    return image, (top + SIDE // 2, left + SIDE // 2)


CORNERS = np.stack([corner_image(q)[0] for q in QUADRANTS])  # one image per quadrant


def quadrant_view(heatmap, quadrant):
    row, col = QUADRANTS[quadrant]
    return heatmap[row * HALF:(row + 1) * HALF, col * HALF:(col + 1) * HALF]


def assert_follows_the_square(maps):
    for heatmap, quadrant in zip(maps, QUADRANTS):
        share = quadrant_view(heatmap, quadrant).sum() / heatmap.sum()
        assert share > 0.99, f"square {quadrant}: only {share:.0%} of the map there"
        top, left = np.unravel_index(heatmap.argmax(), heatmap.shape)
        assert QUADRANTS[quadrant] == (top // HALF, left // HALF)


# --- Grad-CAM and CAM on the known model --------------------------------------

@pytest.mark.parametrize("head", ["gap", "flatten"])
def test_grad_cam_follows_the_bright_square(head):
    model = corner_model(head)
    maps, proba, layer = cam.grad_cam(model, CORNERS)
    assert (layer.name, layer.height, layer.width) == ("pool", 8, 8)  # the last conv-like layer
    assert maps.shape == (4, SIZE, SIZE) and maps.dtype == np.float32
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0)
    assert_follows_the_square(maps)
    np.testing.assert_allclose(proba, np.asarray(model(CORNERS))[:, 1], atol=1e-6)
    # batches of 3 give the same maps: the images do not mix in the backward pass
    np.testing.assert_allclose(cam.grad_cam(model, CORNERS, batch_size=3).maps, maps, atol=1e-6)


def test_grad_cam_is_the_same_through_gap_or_flatten():
    # Equal weights at every position: the gradient averaged over space is the same.
    gap = cam.grad_cam(corner_model("gap"), CORNERS).maps
    np.testing.assert_allclose(cam.grad_cam(corner_model("flatten"), CORNERS).maps, gap, atol=1e-5)


def test_the_other_class_lights_the_background():
    image, (cy, cx) = corner_image("top-left")
    (heatmap,) = cam.grad_cam(corner_model(), image[None], class_index=0).maps
    assert heatmap[cy, cx] < 0.05
    assert quadrant_view(heatmap, "bottom-right").mean() > 0.9


def test_classic_cam_follows_the_square_and_equals_grad_cam():
    model = corner_model("gap")
    maps, proba, layer = cam.cam(model, CORNERS)
    assert layer.name == "pool" and maps.shape == (4, SIZE, SIZE)
    assert_follows_the_square(maps)
    np.testing.assert_allclose(maps, cam.grad_cam(model, CORNERS).maps, atol=1e-5)
    np.testing.assert_allclose(proba, np.asarray(model(CORNERS))[:, 1], atol=1e-6)


def test_classic_cam_needs_gap_before_the_dense():
    with pytest.raises(ValueError, match="grad_cam"):
        cam.cam(corner_model("flatten"), CORNERS)


@pytest.mark.parametrize("with_input", [True, False], ids=["add-Input-first", "never-built"])
def test_sequential_grown_with_add_gives_the_functional_maps(with_input):
    # With an Input first, each add() rebuilds the graph and layer.output belongs to an
    # older one (its gradient is None); without one the model has no inputs at all.
    model = keras.Sequential(name="corner_sequential")
    if with_input:
        model.add(keras.Input((SIZE, SIZE, 3)))
    for layer in corner_layers("flatten"):
        model.add(layer)
    assert model.built == with_input
    maps = cam.grad_cam(model, CORNERS).maps
    np.testing.assert_allclose(maps, cam.grad_cam(corner_model("flatten"), CORNERS).maps, atol=1e-5)
    assert cam.find_layer(model).name == "pool"


def test_a_layer_without_weights_above_it_still_gets_gradients():
    # No trainable variable before "shrink": only a watched input makes the tape record it.
    # So early, the map is much the image itself: hottest on the square, grey elsewhere.
    maps, _, layer = cam.grad_cam(corner_model(shrink=True), CORNERS, layer="shrink")
    assert (layer.height, layer.width) == (HALF, HALF)
    for heatmap, quadrant in zip(maps, QUADRANTS):
        assert quadrant_view(heatmap, quadrant).max() == 1
        assert np.median(heatmap) < 0.5


def test_a_nested_model_is_refused_with_the_way_out():
    inputs = keras.Input((SIZE, SIZE, 3))
    outer = keras.Model(inputs, corner_model()(inputs), name="outer")
    with pytest.raises(ValueError, match="'outer' nests the model 'corner_gap'.*flat"):
        cam.grad_cam(outer, CORNERS)


def test_a_layer_the_score_ignores_is_refused():
    detect, *rest = corner_layers()
    x = inputs = keras.Input((SIZE, SIZE, 3))
    for layer in [detect, L.Lambda(keras.ops.stop_gradient, name="stop"), *rest]:
        x = layer(x)
    with pytest.raises(ValueError, match="no gradient.*'detect'"):
        cam.grad_cam(keras.Model(inputs, x), CORNERS, layer="detect")


# --- the registry ---------------------------------------------------------------

@pytest.fixture(scope="module")
def built():
    """Registry models with weights=None at their default size, built once for the module."""
    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            cache[name] = models.build_model(name)
        return cache[name]
    return get


def model_inputs(name, n=3):
    size = models.input_size(name)
    x = np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")
    prep = models.preprocess_for(name)
    return x if prep is None else np.asarray(prep(x))


def assert_valid_maps(maps, n, size):
    assert maps.shape == (n, size, size) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert set(np.round(maps.max(axis=(1, 2)), 5)) <= {0.0, 1.0}  # scaled per image


@pytest.mark.parametrize("name, layer", [("cancernet", "block3_pool"),
                                         ("vgg_style", "block5_conv2"),  # block5_pool is 1x1
                                         ("mobilenet_v2", "out_relu")])
def test_grad_cam_on_registry_models(built, name, layer):
    model, x = built(name), model_inputs(name)
    maps, proba, info = cam.grad_cam(model, x)
    assert_valid_maps(maps, len(x), models.input_size(name))
    assert info.name == layer and min(info.height, info.width) > 1
    np.testing.assert_allclose(proba, np.asarray(model(x, training=False))[:, 1], atol=1e-5)


def test_classic_cam_on_a_backbone_gap_model_equals_grad_cam(built):
    model, x = built("mobilenet_v2"), model_inputs("mobilenet_v2")
    maps, _, layer = cam.cam(model, x)
    assert layer.name == "out_relu" and (layer.height, layer.width) == (2, 2)
    assert_valid_maps(maps, len(x), 50)
    np.testing.assert_allclose(maps, cam.grad_cam(model, x).maps, atol=1e-4)


def test_explaining_leaves_the_model_as_it_was(built, tmp_path):
    # Explaining builds a second keras.Model on the model's layers: the model must not notice.
    model, x = built("cancernet"), model_inputs("cancernet")
    before = np.asarray(model(x, training=False))
    cam.grad_cam(model, x)
    model.save(tmp_path / "cancernet.keras")
    again = keras.models.load_model(tmp_path / "cancernet.keras")
    np.testing.assert_allclose(np.asarray(again(x, training=False)), before, atol=1e-6)
    assert [layer.name for layer in again.layers] == [layer.name for layer in model.layers]


def test_classic_cam_on_cancernet_says_to_use_grad_cam(built):
    with pytest.raises(ValueError, match="grad_cam") as err:
        cam.cam(built("cancernet"), model_inputs("cancernet"))
    assert "GlobalAveragePooling2D" in str(err.value)


def test_resnet50_layers_inside_the_backbone(built):
    model = built("resnet50")
    last = cam.find_layer(model)
    assert (last.name, last.height, last.width) == ("conv5_block3_out", 2, 2)  # 2x2 at 50x50
    inner = cam.find_layer(model, "conv4_block6_out")
    assert (inner.height, inner.width) == (4, 4) and inner.layer is model.get_layer("conv4_block6_out")
    assert cam.find_layer(model, min_side=4) == inner
    table = cam.conv_layers(model).set_index("name")
    assert list(table.columns) == ["kind", "height", "width", "channels", "on_every_path"]
    assert table.loc["conv4_block6_out"].tolist() == ["Activation", 4, 4, 1024, True]
    assert not table.loc["conv4_block6_1_conv", "on_every_path"]  # inside a residual block
    assert table.loc["conv4_block6_add", "on_every_path"]  # the shortcut and the residual meet there


def tape_grad_cam(model, x, layer_name, class_index):
    """Grad-CAM written out, as in the keras-io example and notebook 13."""
    grad_model = keras.Model(model.input, [model.get_layer(layer_name).output, model.get_layer("logits").output])
    with tf.GradientTape() as tape:
        features, logits = grad_model(x, training=False)
        score = tf.reduce_sum(logits[:, class_index] - tf.reduce_mean(logits, axis=1))  # the centred logit
    grads = tape.gradient(score, features)
    assert grads is not None
    raw = np.maximum((features.numpy() * grads.numpy().mean(axis=(1, 2))[:, None, None]).sum(-1), 0)
    up = tf.image.resize(raw[..., None], x.shape[1:3]).numpy()[..., 0]
    return up / np.maximum(up.max(axis=(1, 2), keepdims=True), 1e-12)


@pytest.mark.parametrize("name, layer", [("resnet50", "conv4_block6_out"), ("xception", None)])
def test_grad_cam_equals_the_tape_written_out(built, name, layer):
    model, x = built(name), model_inputs(name)
    size = models.input_size(name)
    tops = []
    for class_index in (0, 1):
        maps, _, info = cam.grad_cam(model, x, layer=layer, class_index=class_index)
        assert info.name == (layer or "block14_sepconv2_act")  # Xception at 71x71: its last map, 3x3
        assert_valid_maps(maps, len(x), size)
        np.testing.assert_allclose(maps, tape_grad_cam(model, x, info.name, class_index), atol=1e-4)
        tops.append(maps.max())
    # Random weights often leave no positive evidence (an all-zero map); not for every class.
    assert max(tops) == 1


def test_unknown_layer_names_it_and_the_candidates(built):
    with pytest.raises(ValueError, match="block9_nothing") as err:
        cam.find_layer(built("cancernet"), "block9_nothing")
    assert "block3_pool" in str(err.value)


def test_a_layer_without_a_map_is_refused(built):
    with pytest.raises(ValueError, match="'fc'.*4-D"):
        cam.grad_cam(built("cancernet"), model_inputs("cancernet"), layer="fc")


def test_wrong_image_size_or_class_is_refused(built):
    model = built("cancernet")
    with pytest.raises(ValueError, match=r"\(50, 50, 3\).*\(32, 32, 3\)"):
        cam.grad_cam(model, np.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="class_index.*2"):
        cam.grad_cam(model, model_inputs("cancernet"), class_index=2)
    with pytest.raises(ValueError, match=r"images\[None\]"):
        cam.grad_cam(model, model_inputs("cancernet")[0])


# --- figures --------------------------------------------------------------------

@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def jet(value):
    return np.rint(np.array(matplotlib.colormaps["jet"](value)[:3]) * 255)


def test_overlay_blends_and_resizes():
    image = np.random.default_rng(0).integers(0, 256, (50, 50, 3)).astype("uint8")
    hot = np.zeros((75, 75), "float32")
    hot[:37, :37] = 1  # a map of a 75x75 input, hot in its top-left quadrant
    out = cam.overlay(image, hot, alpha=1.0)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[5, 5], jet(1.0))
    np.testing.assert_array_equal(out[45, 45], jet(0.0))
    np.testing.assert_array_equal(cam.overlay(image, hot, alpha=0.0), image)
    np.testing.assert_array_equal(cam.overlay(image.astype("float32"), hot), cam.overlay(image, hot))
    with pytest.raises(ValueError, match="alpha.*1.5"):
        cam.overlay(image, hot, alpha=1.5)
    with pytest.raises(ValueError, match="heatmap"):
        cam.overlay(image, hot[None])


def panel_texts(fig):
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def test_outcome_grid_shows_the_surest_of_each_outcome():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (12, 50, 50, 3))
    maps = rng.uniform(0, 1, (12, 50, 50)).astype("float32")
    y_true = np.array([1] * 6 + [0] * 6)
    proba = np.array([0.95, 0.9, 0.8, 0.7, 0.4, 0.35, 0.6, 0.3, 0.2, 0.15, 0.1, 0.05])
    fig = cam.outcome_grid(images, maps, y_true, proba, 0.5, "Grad-CAM", per_group=3)
    assert isinstance(fig, matplotlib.figure.Figure)
    # 3 TP + 2 FN + 1 FP + 3 of 5 TN, each patch above its overlay
    assert len(fig.findobj(matplotlib.image.AxesImage)) == 2 * (3 + 2 + 1 + 3)
    texts = panel_texts(fig)
    assert "p=0.95" in texts and "p=0.70" not in texts  # the 3 surest of 4 true positives
    assert "p=0.05" in texts and "p=0.20" not in texts  # the 3 surest of 5 true negatives
    assert any(t.startswith("false negatives") and "(2)" in t for t in texts)


def test_outcome_grid_copes_with_empty_outcomes():
    images = np.zeros((2, 50, 50, 3), "uint8")
    fig = cam.outcome_grid(images, np.zeros((2, 50, 50)), [1, 1], [0.9, 0.8], 0.5, "all IDC")
    texts = panel_texts(fig)
    for outcome in ("false negatives", "false positives", "true negatives"):
        assert f"no {outcome} at threshold 0.50" in texts
    with pytest.raises(ValueError, match="lengths"):
        cam.outcome_grid(images, np.zeros((3, 50, 50)), [1, 1], [0.9, 0.8], 0.5, "bad")


def test_layer_comparison_has_a_row_per_patch_and_a_column_per_layer():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, 20, 20, 3)).astype("float32")
    maps = {"early": rng.uniform(0, 1, (3, 20, 20)), "late": rng.uniform(0, 1, (3, 20, 20))}
    fig = cam.layer_comparison(images, maps, "two layers", proba=[0.1, 0.5, 0.9])
    assert len(fig.axes) == 3 * 3
    assert fig.axes[1].get_title() == "early" and fig.axes[2].get_title() == "late"
    assert fig.axes[3].get_title() == "patch, p=0.50"
    with pytest.raises(ValueError, match="'late': 2 maps for 3 images"):
        cam.layer_comparison(images, {"late": maps["late"][:2]}, "bad")
    plt.close("all")
