"""Every model of the series, built by name: ``build_model("cancernet")``.

Each ends in ``Dense(2)`` ("logits") and a float32 softmax ("predictions"; column 1 is IDC), so that
mixed precision loses no precision in the loss. Models from scratch rescale [0, 255] inside. A Keras
application is built on the model's own input (``input_tensor=``): one flat graph, so
``model.get_layer("conv4_block6_out")`` reaches any backbone layer; its ``preprocess_input`` runs in
the data pipeline (``preprocess_for``). Backbone weights: ``"imagenet"``, None (random), or a ``.keras``
/ ``.weights.h5`` / ``.h5`` file, e.g. a whole model of this registry trained on BreakHis (its
backbone's weights are taken, the head starts fresh). The ``*_table`` functions and ``receptive_field``
read built layers for notebooks 02-07.
"""

from __future__ import annotations

import contextlib
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pandas as pd
from keras import layers

from . import hardware

# The layers of ours around a backbone: a scaling layer may come before it (the thyroid
# models'), the head starts with one of HEAD_START. backbone_layers() is what lies between.
SCALING = ("scale", "featurewise")
HEAD_START = ("flatten", "gap")
# Momentum of the BatchNormalization layers made here (Keras' default 0.99). The moving statistics
# start at mean 0 / variance 1; CancerNet's first BN sees variances near 1e-3, so until momentum**n
# is well below that predict() shrinks every activation: 0.99 needs ~700 steps, more than a short
# run has (measured: validation AUC 0.23 after one epoch of 2,800 patches); 0.9 needs ~70.
BN_MOMENTUM = 0.9
# Per socket operation: a stalled download fails in seconds, a slow but live one goes through.
DOWNLOAD_TIMEOUT = 20.0


class WeightsError(ValueError):
    """The requested weights cannot be had (offline, missing or unsuitable file)."""


@dataclass(frozen=True)
class ModelSpec:
    builder: Callable  # builder(size, *, weights, pretrained, dropout, **kwargs) -> keras.Model
    min_size: int  # smallest input side the architecture accepts
    default_size: int  # the side the series feeds it
    preprocess: Callable | None  # applied in the tf.data pipeline to float32 in [0, 255]
    pretrained: bool  # True: a Keras application that has ImageNet weights


def _classify(x, inputs, name, dropout=None):
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Dense(2, dtype="float32", name="logits")(x)  # float32: else float16 under mixed precision
    return keras.Model(inputs, layers.Activation("softmax", dtype="float32", name="predictions")(x), name=name)


def _dense_bn(x, units, regularizer=None, momentum=BN_MOMENTUM):
    """Dense -> ReLU -> BatchNormalization, the seed's head of CancerNet and ResNet50."""
    x = layers.Dense(units, kernel_regularizer=regularizer, name="fc")(x)
    x = layers.Activation("relu", name="fc_relu")(x)
    return layers.BatchNormalization(momentum=momentum, name="fc_bn")(x)


def _rescaled_input(size):
    inputs = keras.Input((size, size, 3), name="image")
    return inputs, layers.Rescaling(1 / 255, name="rescale")(inputs)


# Every builder takes ``normalize`` (see _featurewise) so that a study can pass it to any model;
# the scratch models keep their Rescaling(1/255).
def _vgg_style(size, *, weights=None, pretrained=False, dropout=None, normalize=None,
               filters=(32, 64, 128, 256, 256), dense_units=256):
    inputs, x = _rescaled_input(size)
    for b, f in enumerate(filters, 1):
        for c in (1, 2):
            x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"block{b}_conv{c}")(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="fc")(x)
    return _classify(x, inputs, "vgg_style", 0.5 if dropout is None else dropout)


def _cancernet(size, *, weights=None, pretrained=False, dropout=None, normalize=None,
               filters=((32,), (64, 64), (128, 128, 128)), dense_units=256, kernel_size=3,
               downsample="pool", block_dropout=0.25, l2=0.0, bn_momentum=BN_MOMENTUM, head="flatten"):
    """CancerNet; the keywords are the knobs of the architecture and regularization studies:
    ``downsample`` "pool" (a 2x2 max-pool closes each block, the original) or "stride" (the block's
    first convolution has stride 2); ``l2`` penalty on every kernel; ``head`` "flatten" (the
    original) or "gap" (GlobalAveragePooling2D: 128 features, not 6x6x128 at 50x50)."""
    if downsample not in ("pool", "stride"):
        raise ValueError(f"downsample must be 'pool' or 'stride', got {downsample!r}")
    if head not in ("flatten", "gap"):
        raise ValueError(f"head must be 'flatten' or 'gap', got {head!r}")
    reg = keras.regularizers.L2(l2) if l2 else None
    inputs, x = _rescaled_input(size)
    for b, block in enumerate(filters, 1):
        for c, f in enumerate(block, 1):
            x = layers.SeparableConv2D(f, kernel_size, strides=2 if downsample == "stride" and c == 1 else 1,
                                       padding="same", name=f"block{b}_sepconv{c}",
                                       depthwise_regularizer=reg, pointwise_regularizer=reg)(x)
            x = layers.Activation("relu", name=f"block{b}_relu{c}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{b}_bn{c}")(x)
        if downsample == "pool":
            x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
        if block_dropout:
            x = layers.Dropout(block_dropout, name=f"block{b}_dropout")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x) if head == "gap" else layers.Flatten(name="flatten")(x)
    x = _dense_bn(x, dense_units, reg, bn_momentum)
    return _classify(x, inputs, "cancernet", 0.5 if dropout is None else dropout)


@contextlib.contextmanager
def _imagenet_download(name):
    """Turn a failed download of ImageNet weights into a WeightsError that says what to do."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        yield
    except Exception as exc:
        # keras' get_file wraps URL errors in a bare Exception; a stalled socket raises
        # TimeoutError (an OSError). Anything else (e.g. a bad alpha) is not a download.
        if not (type(exc) is Exception or isinstance(exc, OSError) or "corrupted" in str(exc)):
            raise
        raise WeightsError(
            f"Could not get the ImageNet weights for {name!r}: {exc}. Choose one of: "
            "weights='imagenet' needs internet access once (e.g. on Colab; Keras then "
            "caches the file in ~/.keras/models/); weights=None trains from scratch; "
            "weights='path/to/file.keras' (or .weights.h5 / .h5) loads a weights file."
        ) from exc
    finally:
        socket.setdefaulttimeout(old)


def _backbone(app, name, head, scaling=None):
    def build(size, *, weights=None, pretrained=False, dropout=None, normalize=None, **kwargs):
        inputs = keras.Input((size, size, 3), name="image")
        x = inputs if scaling is None else scaling(normalize)(inputs)
        # input_tensor: the application's layers are called in this model's graph, so it is flat
        with _imagenet_download(name) if weights == "imagenet" else contextlib.nullcontext():
            backbone = app(include_top=False, weights=weights, input_tensor=x, **kwargs)
        # Pretrained, _freeze keeps every BN's statistics (see there). From scratch they must be
        # learnt within a short run: MobileNetV2's momentum 0.999 is too slow (measured: after 2
        # smoke epochs it predicted one class for every patch, AUC 0.50).
        if not pretrained:
            for layer in backbone.layers:
                if isinstance(layer, layers.BatchNormalization):
                    layer.momentum = min(layer.momentum, BN_MOMENTUM)
        return head(backbone.output, inputs, name, dropout)
    return build


def _featurewise(normalize):
    """The thyroid track's input scaling, inside the model so that a saved model carries it:
    ``normalize=(mean, variance)`` per channel of the training images, or None for [-1, 1]."""
    if normalize is None:
        return layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")
    mean, variance = normalize
    return layers.Normalization(axis=-1, mean=mean, variance=variance, name="featurewise")


def _flatten_head(x, inputs, name, dropout):
    return _classify(_dense_bn(layers.Flatten(name="flatten")(x), 256), inputs, name, dropout)


def _gap_head(x, inputs, name, dropout):
    return _classify(layers.GlobalAveragePooling2D(name="gap")(x), inputs, name, dropout)


_apps = keras.applications
# name: (application, module of its preprocess_input or None, scaling layer, head, min size, size)
_BACKBONES = {
    "resnet50": (_apps.ResNet50, _apps.resnet50, None, _flatten_head, 32, 50),  # the seed's Flatten/Dense 256 head
    "inception_v3": (_apps.InceptionV3, _apps.inception_v3, None, _gap_head, 75, 75),
    "xception": (_apps.Xception, _apps.xception, None, _gap_head, 71, 71),
    "mobilenet_v2": (_apps.MobileNetV2, _apps.mobilenet_v2, None, _gap_head, 32, 50),
    # The thyroid track (notebooks 16-17): GAP heads, scaling inside the model.
    "vgg16": (_apps.VGG16, None, _featurewise, _gap_head, 32, 64),
    "vgg19": (_apps.VGG19, None, _featurewise, _gap_head, 32, 64),
    "resnet50_gap": (_apps.ResNet50, None, _featurewise, _gap_head, 32, 64),
    "resnet101": (_apps.ResNet101, None, _featurewise, _gap_head, 32, 64),
    # No scaling: Keras' EfficientNet rescales [0, 255] itself (the seed fed it [0, 1] images,
    # which it then divided by 255 again). 64M parameters.
    "efficientnet_b7": (_apps.EfficientNetB7, None, None, _gap_head, 32, 64),
}
MODELS: dict[str, ModelSpec] = {
    "vgg_style": ModelSpec(_vgg_style, 32, 50, None, False),  # the seed's VGG16-like CNN
    "cancernet": ModelSpec(_cancernet, 8, 50, None, False),
    **{name: ModelSpec(_backbone(app, name, head, scaling), min_size, size, module and module.preprocess_input, True)
       for name, (app, module, scaling, head, min_size, size) in _BACKBONES.items()},
}
THYROID_MODELS = ("vgg16", "vgg19", "resnet50_gap", "resnet101", "efficientnet_b7")
IDC_MODELS = tuple(name for name in MODELS if name not in THYROID_MODELS)


def _spec(name) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def input_size(name, image_size=None) -> int:
    """The side to resize the patches to for model ``name``: None gives its default size; a size
    below its minimum is raised to it, as the seed resized 50 -> 71 for Xception."""
    spec = _spec(name)
    return max(int(image_size or spec.default_size), spec.min_size)


def preprocess_for(name):
    """A backbone's ``preprocess_input`` for float32 images in [0, 255] in the tf.data pipeline;
    None for the models that rescale inside."""
    return _spec(name).preprocess


def _size(weights) -> int:
    return sum(int(keras.ops.size(w)) for w in weights)


def count_params(model) -> dict:
    """{"total", "trainable", "non_trainable"} parameter counts of a built model."""
    trainable, frozen = _size(model.trainable_weights), _size(model.non_trainable_weights)
    return {"total": trainable + frozen, "trainable": trainable, "non_trainable": frozen}


def backbone_layers(model) -> list:
    """The layers of the Keras application inside ``model`` in the order Keras runs them: those
    between its input (and scaling layer) and its head; a bare application's all; [] from scratch."""
    if model.name in MODELS and not MODELS[model.name].pretrained:
        return []
    body = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if body and body[0].name in SCALING:
        body = body[1:]
    end = next((i for i, layer in enumerate(body) if layer.name in HEAD_START), len(body))
    return body[:end]


def layer_table(layers_) -> pd.DataFrame:
    """What each of ``layers_`` (an input layer is skipped) computes, by name: its kind, output shape,
    parameters and how many of them train."""
    rows = [_layer_row(layer.name, type(layer).__name__, layer.output, [layer])
            for layer in layers_ if not isinstance(layer, keras.layers.InputLayer)]
    return pd.DataFrame(rows).set_index("layer")


def head_table(model) -> pd.DataFrame:
    """``layer_table`` of the layers after ``model``'s backbone, the backbone summed up in one row first."""
    backbone = backbone_layers(model)
    if not backbone:
        raise ValueError(f"{model.name!r} has no backbone: its layers are all its own (layer_table)")
    last = backbone[-1]
    row = _layer_row(f"{model.name} ({len(backbone)} layers, up to {last.name})", "backbone", last.output, backbone)
    head = layer_table(model.layers[model.layers.index(last) + 1:])
    return pd.concat([pd.DataFrame([row]).set_index("layer"), head])


def _shape(tensor) -> str:
    return " × ".join(map(str, tensor.shape[1:]))


def _layer_row(name, kind, output, layers_) -> dict:
    return {"layer": name, "kind": kind, "output": _shape(output),
            "parameters": sum(_size(layer.weights) for layer in layers_),
            "trainable": sum(_size(layer.trainable_weights) for layer in layers_)}


def receptive_field(model, layer=None) -> tuple[int, int]:
    """(height, width) of the input window that one unit of ``layer`` (a name; None: the last
    convolution or pooling) sees, in a chain of layers: each k×k layer widens the window by k − 1
    steps of the layers before it (1 pixel, times every stride so far)."""
    window, step = np.ones(2, int), np.ones(2, int)
    for each in model.layers:
        kernel = getattr(each, "kernel_size", None) or getattr(each, "pool_size", None)
        if kernel is not None:
            spread = (np.array(kernel) - 1) * np.array(getattr(each, "dilation_rate", (1, 1)))
            window, step = window + spread * step, step * np.array(each.strides)
        if each.name == layer:
            return int(window[0]), int(window[1])
    if layer is not None:
        raise ValueError(f"{model.name!r} has no layer {layer!r}")
    return int(window[0]), int(window[1])


def stack_table(stacks: dict, input_shape) -> pd.DataFrame:
    """Each named stack (a list of layers) built on one input of ``input_shape``: the window one unit of
    its output sees (``receptive_field``), its output shape and its parameters."""
    rows = {}
    for name, stack in stacks.items():
        model = keras.Sequential([keras.Input(input_shape), *stack])
        rows[name] = {"window": " × ".join(map(str, receptive_field(model))), "output": _shape(stack[-1].output),
                      "parameters": model.count_params()}
    return pd.DataFrame.from_dict(rows, orient="index")


def build_model(name, image_size=None, weights=None, fine_tune_at=None, dropout=None, seed=None, **kwargs):
    """Build model ``name`` of ``MODELS`` for 2 classes; compile it after any later change to ``trainable``.

    fine_tune_at None: with pretrained weights the whole backbone is frozen (feature extraction),
                 without everything trains. N: ``backbone_layers(model)[:N]`` are frozen (for
                 vgg_style / cancernet the layers after the rescaling: cancernet's first block is
                 5, the seed's fine_tune_at=5). With pretrained weights every BN stays frozen.
    dropout      before the final Dense; None: the model's default (0.5 from scratch, else none).
    seed         seeds Keras before the build: the same seed, the same initial weights.
    **kwargs     for the builder, e.g. ``alpha=0.35`` (mobilenet_v2), ``filters=`` (vgg_style).
    """
    spec = _spec(name)
    size = int(image_size or spec.default_size)
    if size < spec.min_size:
        raise ValueError(f"model {name!r} needs image_size >= {spec.min_size}, got {size}")
    path = _weights_path(name, spec, weights)
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    build = lambda: spec.builder(size, weights=weights if weights == "imagenet" else None,  # noqa: E731
                                 pretrained=weights is not None, dropout=dropout, **kwargs)
    with hardware.strategy().scope():  # a no-op on one device; mirrored variables on several
        model = build()
        if path is not None:
            _load_weights_file(model, spec, path, donor=build)
    _freeze(model, spec, fine_tune_at, pretrained=weights is not None)
    return model


def _weights_path(name, spec, weights):
    if weights is None:
        return None
    if weights == "imagenet":
        if not spec.pretrained:
            raise WeightsError(f"{name!r} has no ImageNet weights: use weights=None "
                               "(train from scratch) or a path to a weights file")
        return None
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path} (weights= takes 'imagenet', "
                           "None, or a path to a .keras / .weights.h5 / .h5 file)")
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise WeightsError(f"cannot read weights from {path}: use a .keras, .weights.h5 or .h5 file")
    return path


def _load_weights_file(model, spec, path, donor):
    try:
        if path.suffix == ".keras":
            source = keras.saving.load_model(path, compile=False)
        elif not spec.pretrained:  # the model's own weights
            model.load_weights(path)
            return
        else:
            import h5py

            # Keras 3 files name each layer's entry by its class: "dense", "conv2d_3", and
            # "functional" for a nested model. A Keras 2 / ImageNet .h5 file has none.
            with h5py.File(path, "r") as f:
                saved = list(f.get("layers", {}))
            if any(k.startswith("functional") for k in saved):
                raise WeightsError(f"{path} holds a model saved when its backbone was one nested "
                                   "layer; its .keras file, or the backbone's own weights, will do")
            if not any(k.startswith("dense") for k in saved):
                # A bare backbone or Keras's ImageNet .h5: the part of the model from its input
                # to the backbone's output is that application, on the same layers.
                keras.Model(model.inputs, backbone_layers(model)[-1].output).load_weights(path)
                return
            source = donor()  # a whole model of this registry: the saved layers match
            source.load_weights(path, skip_mismatch=True)  # a head of other shape is skipped
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"could not load weights from {path}: {exc}") from exc
    if spec.pretrained:  # the source: a model of this registry, a bare application, or one nesting it
        nested = [layer for layer in source.layers if isinstance(layer, keras.Model)]
        theirs = nested[0].layers if len(nested) == 1 else backbone_layers(source)
        _copy_weights(backbone_layers(model), theirs, path, strict=True)
    else:
        _copy_weights(model.layers, source.layers, path, strict=False)


def _copy_weights(target, source, path, strict):
    """Layer by layer in order. strict: every layer must fit (a backbone); else a layer whose shapes
    differ keeps its fresh weights (the Dense after Flatten of a file trained at another size)."""
    dst = [layer for layer in target if layer.weights]
    src = [layer for layer in source if layer.weights]
    if len(dst) != len(src):
        raise WeightsError(f"{path} holds another architecture ({len(src)} layers with "
                           f"weights where this model has {len(dst)})")
    skipped = []
    for d, s in zip(dst, src):
        if [tuple(w.shape) for w in s.weights] == [tuple(w.shape) for w in d.weights]:
            d.set_weights(s.get_weights())
        else:
            skipped.append(d.name)
    if skipped and (strict or len(skipped) == len(dst)):
        raise WeightsError(f"{path} holds another variant of the architecture: the shapes of "
                           f"{len(skipped)} of {len(dst)} layers differ ({', '.join(skipped[:3])}, ...)")
    if skipped:
        warnings.warn(f"{len(skipped)} layer(s) keep fresh weights, their shapes differ "
                      f"in {path}: {', '.join(skipped[:5])}", stacklevel=4)


def _freeze(model, spec, fine_tune_at, pretrained):
    if spec.pretrained:
        body = backbone_layers(model)
        # BN must keep the statistics learnt in pretraining, even where layers are unfrozen: small
        # batches of a new set wreck them. trainable=False runs BN in inference mode even under
        # fit() (training=False on the call would not hold: keras-team/keras#20285).
        for layer in body:
            if pretrained and isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        if fine_tune_at is None:  # pretrained: feature extraction; from scratch: all trains
            fine_tune_at = len(body) if pretrained else 0
    else:
        if fine_tune_at is None:
            return
        body = [layer for layer in model.layers
                if not isinstance(layer, (keras.layers.InputLayer, keras.layers.Rescaling))]
    n = int(fine_tune_at)
    if not 0 <= n <= len(body):
        raise ValueError(f"fine_tune_at={fine_tune_at} is outside 0..{len(body)} "
                         f"(the layers of {model.name!r} that can be frozen)")
    for layer in body[:n]:
        layer.trainable = False
