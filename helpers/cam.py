"""Class activation maps: where in a patch a model of the registry looks.

``grad_cam`` (Selvaraju et al. 2017): the spatial mean of the class score's gradient with respect to a
feature map weights its channels; any model, any 4-D layer. ``cam`` (Zhou et al. 2016): the final
Dense's weights times the last feature map, for models ending in GlobalAveragePooling2D -> Dense
(where it equals Grad-CAM). Both take images as the model does (after ``models.preprocess_for``)
and return ``Maps``. Every model of the registry is one flat graph, so a layer's output is a tensor
of the model (notebook 13 writes the gradient out). The figures of the maps are here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import layers

from .plots import layer_comparison, outcome_grid, overlay  # noqa: F401 (the figures of the maps)

CONV_KINDS = (layers.Conv2D, layers.SeparableConv2D, layers.DepthwiseConv2D)
# Layers after a convolution whose output is still a feature map worth explaining (ResNet's
# "conv5_block3_out" is an Activation after an Add, InceptionV3's "mixed7" a Concatenate).
FOLLOWER_KINDS = (layers.Activation, layers.ReLU, layers.LeakyReLU, layers.BatchNormalization,
                  layers.MaxPooling2D, layers.AveragePooling2D, layers.Add, layers.Concatenate,
                  layers.Multiply)
# Between GlobalAveragePooling2D and the final Dense without changing classic CAM (identity at inference)
PASS_THROUGH = (layers.Dropout,)
LOGITS = "logits"
MIN_SIDE = 2


@dataclass(frozen=True)
class LayerInfo:
    """A layer with a 4-D output: which one, and how fine its map is."""

    name: str  # "block3_pool", "conv4_block6_out"
    kind: str  # the Keras class, e.g. "Conv2D"
    height: int
    width: int
    channels: int
    layer: object = field(repr=False, compare=False, default=None)

    def __str__(self):
        return f"{self.name} ({self.kind}, {self.height}x{self.width}x{self.channels})"


class Maps(NamedTuple):
    maps: np.ndarray  # (n, h, w) float32 in [0, 1] at the input size, 1 the hottest place; no evidence: 0
    proba: np.ndarray  # (n,) probability of IDC
    layer: LayerInfo  # the feature map explained


class _Step(NamedTuple):
    layer: object
    inputs: list  # the tensors it reads
    output: object


class _Graph(NamedTuple):
    input: object
    steps: list  # in the order the model computes them
    output: object

    def step(self, name):
        return next((s for s in self.steps if s.layer.name == name), None)

    def producer(self, tensor):
        return next((s for s in self.steps if s.output is tensor), None)

    def score(self):
        """The pre-softmax "logits" if the model has them: softmax saturates, its gradient vanishes."""
        return next((s.output for s in self.steps if s.layer.name == LOGITS), self.output)


def _image_shape(model, shape=None):
    """The (height, width, channels) to explain ``model`` at: its own, or that of the images."""
    declared = model.input_shape if model.built else None  # a Sequential never built has none yet
    if isinstance(declared, list):
        raise ValueError(f"model {model.name!r} has several inputs: a CAM needs one image input")
    if declared and shape is not None and (len(declared) != len(shape) + 1 or any(
            d not in (None, s) for d, s in zip(declared[1:], shape))):
        raise ValueError(f"model {model.name!r} takes images of shape {tuple(declared[1:])}, got "
                         f"{tuple(shape)}: resize them first (and apply preprocess_for(name) "
                         "for a backbone model)")
    if shape is None:
        shape = declared[1:] if declared else ()
    if not shape or None in shape:
        raise ValueError(f"model {model.name!r} has no fixed input shape: give it a keras.Input, "
                         "call it once on a batch, or pass images to grad_cam / cam")
    return tuple(int(s) for s in shape)


def _graph(model, shape=None) -> _Graph:
    shape = _image_shape(model, shape)
    if isinstance(model, keras.Sequential):
        if not model.built:
            model.build((None, *shape))  # as a first call would: from now on its size is known
        # add() rebuilds a Sequential's graph each time and layer.output stays in the first one (no
        # gradient flows to it): its layers called on a new input make one graph to read.
        x = image = keras.Input(shape)
        steps = []
        for layer in model.layers:
            steps.append(_Step(layer, [x], layer(x)))
            x = steps[-1].output
        graph = _Graph(image, steps, x)
    else:
        nested = [op.name for op in model.operations if isinstance(op, keras.Model)]
        if nested:
            raise ValueError(f"model {model.name!r} nests the model {nested[0]!r}, whose layers have no "
                             "output in its graph: explain a flat model (helpers.models builds every "
                             "model flat; one saved before that nests its backbone: train it again)")
        steps = [_Step(op, keras.tree.flatten(op.input), op.output) for op in model.operations
                 if not isinstance(op, layers.InputLayer)]
        output = model.outputs[0] if len(model.outputs) == 1 else model.outputs
        graph = _Graph(model.inputs[0], steps, output)
    if not isinstance(graph.output, keras.KerasTensor) or len(graph.output.shape) != 2:
        raise ValueError(f"model {model.name!r} must have one output of shape (n, classes), "
                         f"got {graph.output}")
    return graph


def _info(step) -> LayerInfo:
    _, h, w, c = step.output.shape
    return LayerInfo(step.layer.name, type(step.layer).__name__, h, w, c, step.layer)


def _is_map(step) -> bool:
    return isinstance(step.output, keras.KerasTensor) and len(step.output.shape) == 4


def _candidates(graph) -> list[LayerInfo]:
    found, seen_conv = [], False
    for step in graph.steps:
        if not _is_map(step):
            continue
        is_conv = isinstance(step.layer, CONV_KINDS)
        seen_conv = seen_conv or is_conv
        if is_conv or (seen_conv and isinstance(step.layer, FOLLOWER_KINDS)):
            found.append(_info(step))
    return found


def _on_every_path(graph) -> set[str]:
    """Names of the layers every path from the image to the prediction passes through (a block's
    output, not a branch of it): right after such a layer, its output is the only tensor computed
    so far that a later layer still reads."""
    last_use = {id(graph.output): len(graph.steps)}
    for i, step in enumerate(graph.steps):
        for tensor in step.inputs:
            last_use[id(tensor)] = i
    live, names = {id(graph.input)}, set()
    for i, step in enumerate(graph.steps):
        live = {t for t in live | {id(step.output)} if last_use.get(t, -1) > i}
        if live == {id(step.output)}:
            names.add(step.layer.name)
    return names


def conv_layers(model) -> pd.DataFrame:
    """The feature maps Grad-CAM can explain (convolutions and the layers after them), in the order
    the model computes them; ``on_every_path``: the whole prediction passes through the layer."""
    graph = _graph(model)
    whole = _on_every_path(graph)
    rows = [(i.name, i.kind, i.height, i.width, i.channels, i.name in whole) for i in _candidates(graph)]
    return pd.DataFrame(rows, columns=["name", "kind", "height", "width", "channels", "on_every_path"])


def _choose(graph, model, layer, min_side) -> LayerInfo:
    if isinstance(layer, LayerInfo):
        layer = layer.name
    candidates = _candidates(graph)
    if layer is None:
        if not isinstance(min_side, int) or min_side < 1:
            raise ValueError(f"min_side must be a positive int, got {min_side!r}")
        whole = _on_every_path(graph)
        fine = [i for i in candidates if min(i.height, i.width) >= min_side and i.name in whole]
        if not fine:
            raise ValueError(f"no convolution-like layer of model {model.name!r} on every path to "
                             f"the prediction has a map of at least {min_side}x{min_side}; "
                             "conv_layers(model) lists them all")
        return fine[-1]
    step = graph.step(layer)
    if step is None:
        names = ", ".join(i.name for i in candidates[-8:])
        raise ValueError(f"unknown layer {layer!r} in model {model.name!r}; the last candidates "
                         f"are: {names} (conv_layers(model) lists all {len(candidates)})")
    if not _is_map(step):
        raise ValueError(f"layer {layer!r} outputs {step.output}: a CAM needs a 4-D feature map "
                         "(n, height, width, channels); conv_layers(model) lists them")
    return _info(step)


def find_layer(model, layer=None, min_side=MIN_SIDE) -> LayerInfo:
    """The layer to explain: a name (any 4-D layer), or None for the last of ``conv_layers`` on every
    path whose map is at least ``min_side`` on each side (a 1x1 map says nothing about where; a larger
    ``min_side`` trades the abstraction of deep layers for a finer map)."""
    return _choose(_graph(model), model, layer, min_side)


def _prepare(model, images, class_index):
    """The checked batch and the model's graph at its size."""
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4:
        raise ValueError(f"images must be a batch of shape (n, height, width, channels), got shape "
                         f"{images.shape} (one image: images[None])")
    graph = _graph(model, images.shape[1:])
    classes = graph.output.shape[-1]
    if not isinstance(class_index, (int, np.integer)) or not 0 <= class_index < classes:
        raise ValueError(f"class_index must be an int in [0, {classes}), got {class_index!r}")
    return images, graph


def _over_batches(images, graph, info, batch_size, raw_map) -> Maps:
    """``raw_map(explain, x) -> (raw maps, probabilities)`` batch by batch, where
    ``explain(x)`` gives [feature map, class scores, probabilities]; then the ReLU,
    bilinear upsampling to the input size and scaling to a maximum of 1 per image."""
    explain = keras.Model(graph.input, [graph.step(info.name).output, graph.score(), graph.output])
    maps = [np.zeros((0, *images.shape[1:3]), "float32")]
    proba = [np.zeros(0, "float32")]
    for start in range(0, len(images), batch_size):
        raw, probability = raw_map(explain, tf.convert_to_tensor(images[start:start + batch_size]))
        up = tf.image.resize(tf.nn.relu(tf.cast(raw, "float32"))[..., None], images.shape[1:3])[..., 0]
        top = tf.reduce_max(up, axis=(1, 2), keepdims=True)
        maps.append(tf.math.divide_no_nan(up, top).numpy())  # an all-zero map stays 0
        proba.append(np.asarray(probability[:, 1], dtype="float32"))
    return Maps(np.concatenate(maps), np.concatenate(proba), info)


def grad_cam(model, images, layer=None, class_index=1, batch_size=32) -> Maps:
    """Grad-CAM maps (n, h, w) in [0, 1] of ``class_index`` (1 = IDC) at ``layer`` (None: ``find_layer``'s).

    The class score is the logit before the softmax (which saturates) minus the mean logit: a
    softmax can raise p(IDC) by lowering the other logit, which the bare logit misses (measured:
    all-zero maps for a CancerNet that ranked IDC well).
    """
    images, graph = _prepare(model, images, class_index)
    info = _choose(graph, model, layer, MIN_SIDE)

    def raw_map(explain, x):
        with tf.GradientTape() as tape:
            tape.watch(x)  # a map with no trainable weight above it is otherwise not watched
            features, logits, probability = explain(x, training=False)
            # images are independent at inference: one backward pass for the batch
            score = tf.reduce_sum(logits[:, class_index] - tf.reduce_mean(logits, axis=1))
        grads = tape.gradient(score, features)
        if grads is None:
            raise ValueError(f"no gradient flows from the class score to layer {info.name!r} of "
                             f"model {model.name!r}: choose a layer the prediction depends on")
        weights = tf.reduce_mean(tf.cast(grads, "float32"), axis=(1, 2))
        return tf.einsum("nhwk,nk->nhw", tf.cast(features, "float32"), weights), probability

    return _over_batches(images, graph, info, batch_size, raw_map)


def _gap_head(graph, model):
    """The final Dense and the feature map it reads through GlobalAveragePooling2D, or a ValueError."""
    dense = [s for s in graph.steps if isinstance(s.layer, layers.Dense)]
    final = graph.step(LOGITS) or (dense[-1] if dense else None)
    before = graph.producer(final.inputs[0]) if final else None
    while before is not None and isinstance(before.layer, PASS_THROUGH):
        before = graph.producer(before.inputs[0])
    if before is None or not isinstance(before.layer, layers.GlobalAveragePooling2D) \
            or graph.producer(before.inputs[0]) is None:
        there = "no Dense layer" if final is None else \
            f"{type(before.layer).__name__ if before else 'its input'} before its final Dense"
        raise ValueError(f"classic CAM needs GlobalAveragePooling2D right before the final Dense; "
                         f"model {model.name!r} has {there}: use grad_cam(model, images) instead")
    return final.layer, _info(graph.producer(before.inputs[0]))


def cam(model, images, class_index=1, batch_size=32) -> Maps:
    """Classic CAM (n, h, w) in [0, 1]: the final Dense's weights of the class (relative to their mean
    over classes, as Grad-CAM's centred logit) times the map GlobalAveragePooling2D reads."""
    images, graph = _prepare(model, images, class_index)
    dense, info = _gap_head(graph, model)
    kernels = tf.cast(dense.kernel, "float32")
    kernel = kernels[:, class_index] - tf.reduce_mean(kernels, axis=1)

    def raw_map(explain, x):
        features, _, probability = explain(x, training=False)
        return tf.einsum("nhwk,k->nhw", tf.cast(features, "float32"), kernel), probability

    return _over_batches(images, graph, info, batch_size, raw_map)
