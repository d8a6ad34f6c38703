"""Class activation maps: where in a patch a model of the registry looks.

Two methods, for every model of ``helpers.models`` (and any Keras model that ends
in a Dense layer, with or without a softmax after it):

* ``grad_cam(model, images, layer=None, class_index=1)`` (Selvaraju et al. 2017):
  the gradient of the class score with respect to a feature map, averaged over
  space, weights the channels of that map. Any model, any 4-D layer.
* ``cam(model, images, class_index=1)`` (Zhou et al. 2016): the weights of the
  final Dense times the last feature map. Only for models that end in
  GlobalAveragePooling2D -> Dense (inception_v3, xception, mobilenet_v2); there it
  equals Grad-CAM at the same layer (the tests check it).

Both return ``Maps(maps, proba, layer)``: ``maps`` (n, h, w) float32 in [0, 1] at
the input size (per image, 1 the hottest place; an image with no evidence stays
all 0), ``proba`` (n,) the IDC probability (column 1 of the softmax, whatever
class is explained) and ``layer``, the ``LayerInfo`` explained. Images go in as
the model takes them: [0, 255] for vgg_style / cancernet, after
``models.preprocess_for(name)`` for a backbone model.

Choosing the layer (a 50x50 patch leaves the last feature map of a backbone 1 or 2
pixels wide, too coarse to point at anything):

* ``conv_layers(model)``: a DataFrame of the candidate feature maps (name, kind,
  height, width, channels, on_every_path) in the order the model computes them,
  the layers of a nested backbone included as "backbone/<inner name>";
* ``find_layer(model, layer=None, min_side=2)``: the ``LayerInfo`` (name, kind,
  height, width, channels) to explain: by default the last convolution-like layer
  that the whole prediction passes through (a block's output, not a branch of an
  Inception block) with a map of at least ``min_side`` pixels on each side, so
  ``min_side=6`` finds a finer map; a name picks a layer, inner names of the
  backbone accepted with or without "backbone/". ``grad_cam``'s ``layer`` takes
  the same names, or a ``LayerInfo``.

Figures: ``overlay(image, heatmap)`` blends a patch and its map (RGB uint8);
``outcome_grid(images, maps, y_true, proba, threshold, title)`` shows a few
true / false positives / negatives with their maps.

How it works: the model is traced once on a new ``keras.Input``, layer by layer,
with a nested backbone inlined (its inner layers called on the outer tensors), and
``keras.Model(input, [feature map, class score, probabilities])`` is built on that
graph. This sidesteps two Keras 3 traps: a layer of a nested model has no output
in the outer graph, and in a Sequential grown with ``add()`` ``layer.output`` is
the output of an earlier, discarded graph, so its gradient is None. The graph is
kept per model (``keras.Model`` objects as weak keys) and rebuilt when the model's
layers change.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import NamedTuple

import keras
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import layers
from PIL import Image

CONV_KINDS = (layers.Conv2D, layers.SeparableConv2D, layers.DepthwiseConv2D)
# Layers after a convolution whose output is still a feature map worth explaining:
# ResNet's "conv5_block3_out" is an Activation after an Add, InceptionV3's "mixed7"
# a Concatenate, CancerNet's last block ends in MaxPooling2D.
FOLLOWER_KINDS = (layers.Activation, layers.ReLU, layers.LeakyReLU, layers.BatchNormalization,
                  layers.MaxPooling2D, layers.AveragePooling2D, layers.Add, layers.Concatenate,
                  layers.Multiply)
# Layers that may stand between GlobalAveragePooling2D and the final Dense without
# changing what classic CAM computes (Dropout is the identity at inference).
PASS_THROUGH = (layers.Dropout,)
LOGITS = "logits"
# find_layer's default: a 1x1 map says nothing about where.
MIN_SIDE = 2


@dataclass(frozen=True)
class LayerInfo:
    """A layer with a 4-D output: which one, and how fine its map is."""

    name: str  # "block3_pool", or "backbone/block_13_expand_relu" inside the backbone
    kind: str  # the Keras class, e.g. "Conv2D"
    height: int
    width: int
    channels: int
    layer: object = field(repr=False, compare=False, default=None)

    def __str__(self):
        return f"{self.name} ({self.kind}, {self.height}x{self.width}x{self.channels})"


class Maps(NamedTuple):
    maps: np.ndarray  # (n, h, w) float32 in [0, 1]
    proba: np.ndarray  # (n,) probability of IDC
    layer: LayerInfo  # the feature map explained


# --- tracing the model --------------------------------------------------------

@dataclass
class _Call:
    name: str
    layer: object
    inputs: list  # the KerasTensors it was called on
    output: object


@dataclass
class _Trace:
    input: object
    calls: list
    output: object
    explainers: dict = field(default_factory=dict)  # layer name -> keras.Model

    def find(self, tensor):
        return next((c for c in self.calls if c.output is tensor), None)

    def score(self):
        """The pre-softmax "logits" if the model has them: softmax saturates, its gradient vanishes."""
        logits = [c for c in self.calls if c.name == LOGITS]
        return logits[0].output if logits else self.output


# One trace per model, rebuilt when its layers or input shape change. Weak keys: a
# trace must not keep a model of a closed notebook section alive.
_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _run(model, x, calls, prefix=""):
    """Call ``model``'s layers on ``x`` in order, recording each call; nested models are inlined."""
    def traced(op):
        if not isinstance(op, layers.Layer):
            return op  # a keras.ops function in a functional graph

        def call(*args, **kwargs):
            if isinstance(op, keras.Model):
                # Inlined, its layers get outputs in this graph. The training flag of
                # the call is dropped: the explainers always run with training=False.
                return _run(op, args[0], calls, f"{prefix}{op.name}/")
            out = op(*args, **kwargs)
            inputs = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
            calls.append(_Call(prefix + op.name, op, inputs, out))
            return out
        return call

    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            x = traced(layer)(x)
        return x
    # What Functional.call and keras.models.clone_model run: every node of the graph
    # in order, here with our recording call.
    return model._run_through_graph([x], operation_fn=traced)


def _input_shape(model, shape=None):
    """The (height, width, channels) to trace ``model`` at: its own, or that of the images."""
    try:
        declared = model.input_shape
    except AttributeError:  # a Sequential never built nor called has no input yet
        declared = None
    if isinstance(declared, list):
        raise ValueError(f"model {model.name!r} has several inputs: a CAM needs one image input")
    if declared is not None and shape is not None and (
            len(declared) != len(shape) + 1
            or any(d is not None and d != s for d, s in zip(declared[1:], shape))):
        raise ValueError(f"model {model.name!r} takes images of shape {tuple(declared[1:])}, got "
                         f"{tuple(shape)}: resize them first (and apply preprocess_for(name) "
                         "for a backbone model)")
    size = tuple(shape) if shape is not None else declared and tuple(declared[1:])
    if not size or None in size:
        raise ValueError(f"model {model.name!r} has no fixed input shape: give it a keras.Input, "
                         "call it once on a batch, or pass images to grad_cam / cam")
    return tuple(int(s) for s in size)


def _trace(model, shape=None) -> _Trace:
    cached = _TRACES.get(model)
    if shape is None and cached is not None:
        shape = cached[0][0]  # the size last explained: a never-built Sequential has no other
    shape = _input_shape(model, shape)
    key = (shape, tuple(id(layer) for layer in model.layers))
    if cached is not None and cached[0] == key:
        return cached[1]
    x = keras.Input(shape)
    calls = []
    output = _run(model, x, calls)
    if not isinstance(output, keras.KerasTensor) or len(output.shape) != 2:
        raise ValueError(f"model {model.name!r} must have one output of shape (n, classes), "
                         f"got {output}")
    trace = _Trace(x, calls, output)
    _TRACES[model] = (key, trace)
    return trace


def _explainer(trace, name):
    """keras.Model(image -> [feature map of ``name``, class scores, probabilities])."""
    if name not in trace.explainers:
        call = next(c for c in trace.calls if c.name == name)
        trace.explainers[name] = keras.Model(trace.input, [call.output, trace.score(), trace.output])
    return trace.explainers[name]


# --- choosing the layer -------------------------------------------------------

def _info(call) -> LayerInfo:
    _, h, w, c = call.output.shape
    return LayerInfo(call.name, type(call.layer).__name__, h, w, c, call.layer)


def _is_map(call) -> bool:
    return isinstance(call.output, keras.KerasTensor) and len(call.output.shape) == 4


def _candidates(trace) -> list[LayerInfo]:
    found, seen_conv = [], False
    for call in trace.calls:
        if not _is_map(call):
            continue
        is_conv = isinstance(call.layer, CONV_KINDS)
        seen_conv = seen_conv or is_conv
        if is_conv or (seen_conv and isinstance(call.layer, FOLLOWER_KINDS)):
            found.append(_info(call))
    return found


def _on_every_path(trace) -> set[str]:
    """Names of the layers every path from the image to the prediction passes through.

    In a branched network (Inception, ResNet) a layer inside a branch sees only part
    of what the prediction rests on; a block's output sees all. A layer is on every
    path when, right after it in the traced order, its output is the only tensor
    computed so far that is still needed.
    """
    last_use = {id(trace.output): len(trace.calls)}
    for i, call in enumerate(trace.calls):
        for tensor in call.inputs:
            last_use[id(tensor)] = i
    needed, names = {id(trace.input)}, set()
    for i, call in enumerate(trace.calls):
        needed = {t for t in needed | {id(call.output)} if last_use.get(t, -1) > i}
        if needed == {id(call.output)}:
            names.add(call.name)
    return names


COLUMNS = ["name", "kind", "height", "width", "channels", "on_every_path"]


def conv_layers(model) -> pd.DataFrame:
    """The feature maps Grad-CAM can explain, in the order the model computes them.

    Convolutions and the activations, BatchNorm, pooling and merge layers after
    them, with their output size, those of a nested backbone as
    "backbone/<inner name>". ``on_every_path``: the whole prediction passes
    through the layer (not a branch of an Inception block), as ``find_layer``'s
    default requires.
    """
    trace = _trace(model)
    whole = _on_every_path(trace)
    rows = [(i.name, i.kind, i.height, i.width, i.channels, i.name in whole)
            for i in _candidates(trace)]
    return pd.DataFrame(rows, columns=COLUMNS)


def _choose(trace, model, layer, min_side) -> LayerInfo:
    if isinstance(layer, LayerInfo):
        layer = layer.name
    candidates = _candidates(trace)
    if layer is None:
        if not isinstance(min_side, int) or min_side < 1:
            raise ValueError(f"min_side must be a positive int, got {min_side!r}")
        whole = _on_every_path(trace)
        fine = [i for i in candidates if min(i.height, i.width) >= min_side and i.name in whole]
        if not fine:
            raise ValueError(f"no convolution-like layer of model {model.name!r} on every path to "
                             f"the prediction has a map of at least {min_side}x{min_side}; "
                             "conv_layers(model) lists them all")
        return fine[-1]
    exact = [c for c in trace.calls if c.name == layer]
    matches = exact or [c for c in trace.calls if c.name.split("/")[-1] == layer]
    if not matches:
        names = ", ".join(i.name for i in candidates[-8:])
        raise ValueError(f"unknown layer {layer!r} in model {model.name!r}; the last candidates "
                         f"are: {names} (conv_layers(model) lists all {len(candidates)})")
    if len(matches) > 1:
        raise ValueError(f"layer name {layer!r} is ambiguous in model {model.name!r}: "
                         f"{', '.join(c.name for c in matches)}")
    if not _is_map(matches[0]):
        raise ValueError(f"layer {layer!r} outputs {matches[0].output}: a CAM needs a "
                         "4-D feature map (n, height, width, channels); conv_layers(model) lists them")
    return _info(matches[0])


def find_layer(model, layer=None, min_side=MIN_SIDE) -> LayerInfo:
    """The layer to explain, with the size of its map.

    None: the last convolution-like layer (see ``conv_layers``) that the whole
    prediction passes through and whose map is at least ``min_side`` pixels on
    each side, looking inside a nested backbone. The default 2 skips 1x1 maps,
    which say nothing about where; a larger ``min_side`` trades the abstraction
    of deep layers for a finer map. A name picks that layer
    ("backbone/conv4_block6_out" or just "conv4_block6_out"); any 4-D layer will do.
    """
    return _choose(_trace(model), model, layer, min_side)


# --- the maps -----------------------------------------------------------------

def _as_batch(images) -> np.ndarray:
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4:
        raise ValueError(f"images must be a batch of shape (n, height, width, channels), got shape "
                         f"{images.shape} (one image: images[None])")
    return images


def _prepare(model, images, class_index):
    """The checked batch and the model's trace at its size."""
    images = _as_batch(images)
    trace = _trace(model, images.shape[1:])
    classes = trace.output.shape[-1]
    if not isinstance(class_index, (int, np.integer)) or not 0 <= class_index < classes:
        raise ValueError(f"class_index must be an int in [0, {classes}), got {class_index!r}")
    return images, trace


def _finish(raw, size):
    """ReLU, bilinear upsampling to ``size`` and scaling to a maximum of 1 per image."""
    raw = tf.nn.relu(tf.cast(raw, "float32"))
    up = tf.image.resize(raw[..., None], size, method="bilinear")[..., 0]
    top = tf.reduce_max(up, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(up, top).numpy()  # an all-zero map stays 0


def _over_batches(images, trace, info, batch_size, raw_map) -> Maps:
    """``raw_map(explainer, x) -> (raw maps, probabilities)`` batch by batch; finish and gather."""
    explain = _explainer(trace, info.name)
    maps = [np.zeros((0, *images.shape[1:3]), "float32")]
    proba = [np.zeros(0, "float32")]
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[start:start + batch_size])
        raw, probability = raw_map(explain, x)
        maps.append(_finish(raw, images.shape[1:3]))
        proba.append(np.asarray(probability[:, 1], dtype="float32"))
    return Maps(np.concatenate(maps), np.concatenate(proba), info)


def grad_cam(model, images, layer=None, class_index=1, batch_size=32) -> Maps:
    """Grad-CAM maps (n, h, w) in [0, 1] of ``class_index`` (1 = IDC) for a batch.

    The gradient of the class score (the "logits" before the softmax, which
    saturates, centred: the class's logit minus the mean logit) with respect to the feature map of ``layer`` (``find_layer``'s
    default if None) is averaged over space to weight the map's channels; the ReLU
    of the weighted sum keeps the places that speak for the class.
    """
    images, trace = _prepare(model, images, class_index)
    info = _choose(trace, model, layer, MIN_SIDE)

    def raw_map(explain, x):
        with tf.GradientTape() as tape:
            # Watch the images too: a map with no trainable weight above it (a pooling
            # of the input, say) is otherwise not watched and its gradient is None.
            tape.watch(x)
            features, score, probability = explain(x, training=False)
            # The class's logit minus the mean logit (for two classes, half the log-odds):
            # a softmax can raise p(IDC) by lowering the other logit, which the bare logit
            # misses (measured: all-zero maps for a CancerNet that ranked IDC well).
            # Images are independent at inference: one backward pass for the batch.
            target = tf.reduce_sum(score[:, class_index] - tf.reduce_mean(score, axis=1))
        grads = tape.gradient(target, features)
        if grads is None:
            raise ValueError(f"no gradient flows from the class score to layer {info.name!r} of "
                             f"model {model.name!r}: choose a layer the prediction depends on")
        weights = tf.reduce_mean(tf.cast(grads, "float32"), axis=(1, 2))
        return tf.einsum("nhwk,nk->nhw", tf.cast(features, "float32"), weights), probability

    return _over_batches(images, trace, info, batch_size, raw_map)


def _gap_head(trace, model):
    """The final Dense and the feature map it reads through GlobalAveragePooling2D, or a ValueError."""
    dense = [c for c in trace.calls if isinstance(c.layer, layers.Dense)]
    final = next((c for c in dense if c.name == LOGITS), dense[-1] if dense else None)
    before = trace.find(final.inputs[0]) if final else None
    while before is not None and isinstance(before.layer, PASS_THROUGH):
        before = trace.find(before.inputs[0])
    if before is None or not isinstance(before.layer, layers.GlobalAveragePooling2D) \
            or trace.find(before.inputs[0]) is None:
        there = "no Dense layer" if final is None else \
            f"{type(before.layer).__name__ if before else 'its input'} before its final Dense"
        raise ValueError(f"classic CAM needs GlobalAveragePooling2D right before the final Dense; "
                         f"model {model.name!r} has {there}: use grad_cam(model, images) instead")
    return final.layer, _info(trace.find(before.inputs[0]))


def cam(model, images, class_index=1, batch_size=32) -> Maps:
    """Classic CAM (n, h, w) in [0, 1]: the final Dense's weights of the class times the last map.

    Only for models ending in GlobalAveragePooling2D -> Dense: their class score
    is the spatial mean of exactly this weighted sum, so no gradient is needed.
    The bias is left out and the ReLU applied, and the class's weights are taken
    relative to the mean over classes, as Grad-CAM explains the centred logit.
    """
    images, trace = _prepare(model, images, class_index)
    dense, info = _gap_head(trace, model)
    kernels = tf.cast(dense.kernel, "float32")
    kernel = kernels[:, class_index] - tf.reduce_mean(kernels, axis=1)

    def raw_map(explain, x):
        features, _, probability = explain(x, training=False)
        return tf.einsum("nhwk,k->nhw", tf.cast(features, "float32"), kernel), probability

    return _over_batches(images, trace, info, batch_size, raw_map)


# --- figures ------------------------------------------------------------------

def _rgb_uint8(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be RGB of shape (height, width, 3), got shape {image.shape}")
    return np.clip(np.rint(image.astype("float32")), 0, 255).astype("uint8")


def overlay(image, heatmap, alpha=0.4, cmap="jet") -> np.ndarray:
    """The patch (uint8 or float in [0, 255]) blended with its coloured map, RGB uint8.

    A map of another size (a model fed 71x71 resizes of the 50x50 patches) is
    resized to the patch bilinearly. ``alpha`` is the weight of the map.
    """
    image = _rgb_uint8(image)
    heatmap = np.nan_to_num(np.asarray(heatmap, dtype="float32"))
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (height, width), got shape {heatmap.shape}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    h, w = image.shape[:2]
    if heatmap.shape != (h, w):
        heatmap = np.asarray(Image.fromarray(heatmap).resize((w, h), Image.Resampling.BILINEAR))
    colours = matplotlib.colormaps[cmap](np.clip(heatmap, 0, 1))[..., :3] * 255
    return np.clip(np.rint((1 - alpha) * image + alpha * colours), 0, 255).astype("uint8")


# (truth, prediction, title) laid out as the confusion matrix of plots.evaluation_plots:
# rows the truth, columns the prediction, IDC-negative first.
OUTCOMES = ((0, 0, "true negatives: {neg} called {neg}"),
            (0, 1, "false positives: {neg} called {pos}"),
            (1, 0, "false negatives: {pos} missed"),
            (1, 1, "true positives: {pos} called {pos}"))


def _outcome_panel(subfig, images, maps, proba, picked, total, title, threshold, per_group):
    subfig.suptitle(f"{title} ({total})", fontsize=10)
    if not len(picked):
        ax = subfig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, f"no {title.split(':')[0]} at threshold {threshold:.2f}",
                ha="center", va="center", fontsize=9, color="0.4")
        return
    axes = subfig.subplots(2, per_group, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for col, i in enumerate(picked):
        axes[0, col].imshow(_rgb_uint8(images[i]))
        axes[0, col].set_title(f"p={proba[i]:.2f}", fontsize=8)
        axes[1, col].imshow(overlay(images[i], maps[i]))


def outcome_grid(images, maps, y_true, proba, threshold, title, per_group=4,
                 class_names=("healthy", "IDC")):
    """A few patches of each outcome at ``threshold``, above their maps.

    Four panels laid out as the confusion matrix of ``plots.evaluation_plots``
    (rows the truth, columns the prediction, IDC-negative first), each with the
    patches the model is surest about (the most confident mistakes, say) and
    p, the IDC probability, over each. An outcome without patches says so.
    ``class_names`` (negative, positive) name the classes, e.g. ("benign", "malignant").
    """
    images, maps = np.asarray(images), np.asarray(maps)
    y_true, proba = np.asarray(y_true).astype(int), np.asarray(proba, dtype="float32")
    lengths = {"images": len(images), "maps": len(maps), "y_true": len(y_true), "proba": len(proba)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"images, maps, y_true and proba must be as long, got lengths {lengths}")
    if not isinstance(per_group, (int, np.integer)) or per_group < 1:
        raise ValueError(f"per_group must be a positive int, got {per_group!r}")
    predicted = (proba >= threshold).astype(int)
    # at least 10 inches wide: narrower, the four panel titles run into each other
    fig = plt.figure(figsize=(max(2 * per_group * 1.25 + 0.4, 10), 2 * (2 * 1.25 + 0.5) + 0.4),
                     layout="constrained")
    for subfig, (truth, called, label) in zip(fig.subfigures(2, 2).flat, OUTCOMES):
        members = np.flatnonzero((y_true == truth) & (predicted == called))
        # Surest first: highest p where IDC was called, lowest where it was not.
        order = members[np.argsort(-proba[members] if called else proba[members], kind="stable")]
        label = label.format(neg=class_names[0], pos=class_names[1])
        _outcome_panel(subfig, images, maps, proba, order[:per_group], len(members), label,
                       threshold, per_group)
    fig.suptitle(f"{title}\np: predicted probability of {class_names[1]}, threshold {threshold:.2f}")
    return fig


def layer_comparison(images, maps_by_layer: dict, title: str, proba=None):
    """The same patches explained at several layers: one row per patch, the patch
    then one overlay per layer (an early layer is sharp but sees little; a late one
    sees more but is coarse)."""
    import matplotlib.pyplot as plt

    images = _as_batch(images)
    names = list(maps_by_layer)
    for name, maps in maps_by_layer.items():
        if len(maps) != len(images):
            raise ValueError(f"layer {name!r}: {len(maps)} maps for {len(images)} images")
    rows, cols = len(images), 1 + len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.1 * rows + 0.6), squeeze=False,
                             layout="constrained")
    for r, image in enumerate(images):
        axes[r][0].imshow(_rgb_uint8(image))
        axes[r][0].set_title("patch" if proba is None else f"patch, p={proba[r]:.2f}", fontsize=8)
        for c, name in enumerate(names, 1):
            axes[r][c].imshow(overlay(image, maps_by_layer[name][r]))
            if r == 0:
                axes[r][c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    return fig
