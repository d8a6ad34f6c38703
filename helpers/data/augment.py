"""Data augmentation for the 50x50 H&E patches, as Keras layers on float32 in [0, 255].

The named recipes of ``AUGMENTATIONS`` ("original", "original_both_flips", "histology", "dihedral",
"dihedral_colour", "none") are built by ``by_name(name, seed)``. Every layer keeps shape, dtype
float32 and the range [0, 255], so it runs where the pipeline's images are still raw pixels: before
a pretrained model's ``preprocess_input``, which changes the range. The layers augment only when
called with ``training=True`` (``fit`` does that; ``predict`` and ``evaluate`` do not), and each
image of a batch gets its own random values.

Seeds: a seeded layer draws from a Keras ``SeedGenerator``, a counter stored in the layer, so each
call (each batch, each epoch) draws new values; two layers built with the same seed give the same
outputs for the same sequence of calls, eagerly and in a tf.data map run on one thread (``apply``).
"""

from __future__ import annotations

import math
import re

import keras
import numpy as np
import tensorflow as tf
from keras import layers

# --- H&E stain space ----------------------------------------------------------

# Ruifrok & Johnston (2001), "Quantification of histochemical staining by colour
# deconvolution", the matrix skimage.color.rgb2hed uses: one row per stain
# (Haematoxylin, Eosin, DAB), the optical density each stain puts in R, G and B.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29],
                         [0.07, 0.99, 0.11],
                         [0.27, 0.57, 0.78]], dtype=np.float64)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
# skimage's unit of stain concentration: natural-log optical density / ln(1e6).
# A uint8 pixel spans 0 (white) to ln(256)/ln(1e6) = 0.40 in it. Measured on 500
# patches of idc-sample: median H 0.005 and E 0.012, 95th percentile 0.06 and 0.04.
OD_UNIT = math.log(1e6)


def rgb_to_hed(images):
    """Float RGB in [0, 255] -> stain concentrations (H, E, DAB), skimage's unit.

    Optical density is -ln((x + 1) / 256): white (255) is exactly 0 and black (0)
    is finite, with no clamp. Unlike ``skimage.color.rgb2hed``, negative
    concentrations (colours outside the H/E/DAB cone) are kept, so
    ``hed_to_rgb(rgb_to_hed(x))`` gives x back.
    """
    od = -tf.math.log((tf.cast(images, tf.float32) + 1.0) / 256.0) / OD_UNIT
    return tf.tensordot(od, tf.constant(HED_FROM_RGB, tf.float32), axes=1)


def hed_to_rgb(stains):
    """Stain concentrations -> float RGB, clipped to [0, 255] (inverse of ``rgb_to_hed``)."""
    od = tf.tensordot(stains, tf.constant(RGB_FROM_HED, tf.float32), axes=1)
    return tf.clip_by_value(256.0 * tf.exp(-od * OD_UNIT) - 1.0, 0.0, 255.0)


# --- custom layers ----------------------------------------------------------------

class _RandomImageLayer(keras.layers.Layer):
    """A seeded layer that changes a batch of images in training only.

    float32 even under a mixed-precision policy: float16 would coarsen the pixel
    values and break the float32 promise of this module.
    """

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        return self.augment(images) if training else images

    def uniform(self, images, low, high, channels=1):
        """One draw per image (shape (n, 1, 1, channels)), to broadcast over its pixels."""
        shape = (tf.shape(images)[0], 1, 1, channels)
        return keras.random.uniform(shape, low, high, seed=self.generator)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="idc")
class Dihedral(_RandomImageLayer):
    """One of the 8 symmetries of the square per image: rotation by k x 90 degrees
    (k uniform in 0..3), then a horizontal flip with probability 1/2 (with the
    rotations this gives the vertical flip and both diagonal mirrors too).

    Exact: pixels move, none is interpolated or invented, so tissue texture and
    the patch's edges stay as scanned. Needs square images.
    """

    def build(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        if h is not None and w is not None and h != w:
            raise ValueError(f"Dihedral needs square images; got shape {tuple(input_shape)}")

    def augment(self, images):
        n = tf.shape(images)[0]
        k = keras.random.randint((n,), 0, 4, seed=self.generator)
        # All four rotations of the batch, then each image picks its own: cheap at 50x50
        # and free of per-image Python control flow, so it runs in any graph.
        rotations = tf.stack([tf.image.rot90(images, i) for i in range(4)], axis=1)
        out = tf.gather(rotations, k, axis=1, batch_dims=1)
        flip = self.uniform(images, 0.0, 1.0) < 0.5
        return tf.where(flip, tf.reverse(out, axis=[2]), out)


@keras.saving.register_keras_serializable(package="idc")
class StainJitter(_RandomImageLayer):
    """H&E stain jitter (Tellez et al. 2018): per image and stain, the concentration
    c becomes alpha * c + beta, alpha ~ U(1 - sigma, 1 + sigma), beta ~ U(-bias, bias).

    RGB -> optical density -> H/E/DAB (Ruifrok & Johnston) -> jitter -> RGB, clipped.
    alpha scales each stain where it is: white glass (density 0) stays exactly white.
    beta adds or removes a stain evenly, glass included: at bias 0.005 white moves
    by at most 37 grey levels (green, whose density column sums to 2.26).

    Tellez et al. used one sigma for both (0.05, "HED-light"), but the size of beta
    depends on how optical density is scaled. In skimage's unit, used here, beta
    0.05 can darken white glass to (162, 157, 209), and previews of real patches
    looked psychedelic; alpha 0.05 changed nothing visible. Hence two parameters,
    with defaults chosen on previews: sigma 0.2, bias 0.005.
    """

    def __init__(self, sigma=0.2, bias=0.005, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.sigma = _non_negative("sigma", sigma)
        self.bias = _non_negative("bias", bias)

    def augment(self, images):
        alpha = self.uniform(images, 1.0 - self.sigma, 1.0 + self.sigma, channels=3)
        beta = self.uniform(images, -self.bias, self.bias, channels=3)
        return hed_to_rgb(rgb_to_hed(images) * alpha + beta)

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma, "bias": self.bias}


# ITU-R BT.601 luma, the grey of tf.image.rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)


@keras.saving.register_keras_serializable(package="idc")
class ColourJitter(_RandomImageLayer):
    """Per image: brightness shift (fraction of 255), contrast and saturation factors
    in [1 - x, 1 + x], hue shift (fraction of the colour circle), clipped to [0, 255].

    Written here because Keras' RandomSaturation assumes [0, 1] inside: on [0, 255]
    it returns negative pixels (measured: -127 with factor 0.6).
    """

    def __init__(self, brightness=0.05, contrast=0.1, saturation=0.1, hue=0.02, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.brightness = _non_negative("brightness", brightness)
        self.contrast = _non_negative("contrast", contrast)
        self.saturation = _non_negative("saturation", saturation)
        self.hue = _non_negative("hue", hue)

    def augment(self, images):
        x = images + 255.0 * self.uniform(images, -self.brightness, self.brightness)
        mean = tf.reduce_mean(x, axis=(1, 2), keepdims=True)
        x = mean + (x - mean) * self.uniform(images, 1.0 - self.contrast, 1.0 + self.contrast)
        grey = tf.reduce_sum(x * tf.constant(LUMA), axis=-1, keepdims=True)
        x = grey + (x - grey) * self.uniform(images, 1.0 - self.saturation, 1.0 + self.saturation)
        hsv = tf.image.rgb_to_hsv(tf.clip_by_value(x, 0.0, 255.0) / 255.0)
        hue = tf.math.floormod(hsv[..., :1] + self.uniform(images, -self.hue, self.hue), 1.0)
        x = 255.0 * tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1))
        return tf.clip_by_value(x, 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "brightness": self.brightness, "contrast": self.contrast,
                "saturation": self.saturation, "hue": self.hue}


def _non_negative(name, value):
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0; got {value!r}")
    return float(value)


def _seeds(seed, count):
    """One seed per layer: the same seed in two layers would draw the same numbers."""
    return [None] * count if seed is None else [seed + i for i in range(count)]


# --- the recipes --------------------------------------------------------------

def original_augmentation(seed=None, shear_degrees=0.2, vertical_flip: bool = False) -> keras.Sequential:
    """The seed projects' ImageDataGenerator(rotation_range=20, width_shift_range=0.2,
    height_shift_range=0.2, shear_range=0.2, zoom_range=0.2, horizontal_flip=True),
    in Keras 3 layers.

    The mapping, parameter by parameter:

    * rotation_range=20 (degrees, uniform in +-20): RandomRotation(20 / 360), whose
      factor is a fraction of a full turn;
    * width/height_shift_range=0.2 (fraction of the side): RandomTranslation(0.2, 0.2);
    * shear_range=0.2 is an angle in DEGREES in tf.keras and keras-preprocessing
      (``apply_affine_transform`` calls ``np.deg2rad``), not a fraction. A pixel at
      distance d from the centre line moves by d * sin(angle), so RandomShear, whose
      factor is that displacement ratio, gets sin(0.2 degrees) = 0.0035: under 0.2
      pixel across a 50-pixel patch. The seed's shear did nothing visible; it is
      kept for fidelity (``shear_degrees=0`` drops the layer). The seed sheared
      along one axis only, so only x_factor is set;
    * zoom_range=0.2 (zx, zy each uniform in [0.8, 1.2], independently):
      RandomZoom((-0.2, 0.2), (-0.2, 0.2));
    * horizontal_flip=True: RandomFlip("horizontal"); the thyroid project also set
      vertical_flip=True: ``vertical_flip=True`` gives RandomFlip("horizontal_and_vertical");
    * fill "nearest": ImageDataGenerator's default, which the seed kept. It
      smears the edge pixels into streaks where rotation and shifts uncover the
      corners; "reflect" (Keras 3's default) would mirror tissue there instead.

    One difference stays: ImageDataGenerator composed everything into one affine
    map and interpolated once; here each layer interpolates (bilinear) in turn,
    which softens the patch a little more.
    """
    s = _seeds(seed, 5)
    f32, fill_mode = {"dtype": "float32"}, "nearest"
    steps = [
        layers.RandomRotation(20 / 360, fill_mode=fill_mode, seed=s[0], **f32),
        layers.RandomTranslation(0.2, 0.2, fill_mode=fill_mode, seed=s[1], **f32),
    ]
    if shear_degrees:
        shear = math.sin(math.radians(shear_degrees))
        steps.append(layers.RandomShear(x_factor=shear, fill_mode=fill_mode, seed=s[2], **f32))
    steps += [
        layers.RandomZoom((-0.2, 0.2), (-0.2, 0.2), fill_mode=fill_mode, seed=s[3], **f32),
        layers.RandomFlip("horizontal_and_vertical" if vertical_flip else "horizontal", seed=s[4], **f32),
    ]
    return keras.Sequential(steps, name="original_augmentation")


def _chain(name, *kinds):
    """Layers of ``kinds`` (classes of this module) in turn, each with its own seed, as a recipe of
    ``AUGMENTATIONS``; each layer is named after its class ("stain_jitter", "dihedral", ...)."""

    def build(seed=None) -> keras.Sequential:
        named = [kind(seed=s, name=re.sub(r"(?<!^)(?=[A-Z])", "_", kind.__name__).lower())
                 for kind, s in zip(kinds, _seeds(seed, len(kinds)))]
        return keras.Sequential(named, name=f"{name}_augmentation")

    return build


AUGMENTATIONS = {
    "none": lambda seed=None: None,  # no layer: apply() returns the dataset as it is
    "original": original_augmentation,
    "original_both_flips": lambda seed=None: original_augmentation(seed, vertical_flip=True),
    # For H&E patches: stain jitter, an exact dihedral transform, then mild colour jitter (the layers'
    # defaults). No interpolation and no fill: rotations by 90 degrees and flips only move pixels, so
    # the patch keeps its texture and gains no invented borders.
    "histology": _chain("histology", StainJitter, Dihedral, ColourJitter),
    # Its geometric half on its own, to tell which half helps or hurts (and the training-time twin of TTA).
    "dihedral": _chain("dihedral", Dihedral),
    # Without the stain jitter: the "careful" recipe of issue 26.
    "dihedral_colour": _chain("dihedral_colour", Dihedral, ColourJitter),
}


def by_name(augmentation, seed=None):
    """A layer (or None) from a name in ``AUGMENTATIONS``, None, or a layer/callable as is."""
    if augmentation is None or callable(augmentation):
        return augmentation
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; "
                         f"known augmentations: {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[augmentation](seed=seed)


def apply(ds, augmentation, seed=None, parallel=False, epoch=None):
    """Augment the images (float32 in [0, 255]) of a batched tf.data dataset of (images, labels).

    ``augmentation`` is a name of ``AUGMENTATIONS``, a Keras layer or a function of a batch.
    ``parallel`` maps batches on several threads: they race for the layers' seed counter, so which
    batch gets which draw changes from run to run (measured: no two runs alike). In one thread a
    seeded run repeats exactly, and on 2 cores it was as fast (about 1,000 patches/s).

    ``epoch`` (a number or scalar tensor) keys every draw on (epoch, batch): each batch sets the
    layers' seed counters before it draws, so an epoch's augmentations do not depend on what
    ran before it, and a run resumed at that epoch draws what the uninterrupted one drew.
    """
    layer = by_name(augmentation, seed)
    if layer is None:
        return ds
    spec = ds.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(f"apply wants a dataset of (images, labels); got elements {spec}")
    if spec[0].shape.rank not in (None, 4):
        raise ValueError(f"apply wants batches of images (n, h, w, 3); got shape {spec[0].shape}")
    run = (lambda x: layer(x, training=True)) if hasattr(layer, "call") else layer
    if epoch is None:
        return ds.map(lambda x, y: (run(x), y), num_parallel_calls=tf.data.AUTOTUNE if parallel else None)
    found = [getattr(part, "generator", None) for part in [layer, *getattr(layer, "layers", [])]]
    generators = [g for g in found if isinstance(g, keras.random.SeedGenerator)]  # a layer's or a Sequential's

    def keyed(batch, xy):
        # 64 draws per generator and batch, 2**18 batches per epoch: far more than any run takes
        key = tf.cast(epoch, tf.int64) * 2**24 + batch * 2**6
        sets = [g.state.assign(tf.stack([g.state.value[0], tf.cast(key, g.state.dtype)])) for g in generators]
        with tf.control_dependencies(sets):
            return run(tf.identity(xy[0])), xy[1]

    return ds.enumerate().map(keyed)


# --- a look at what an augmentation does ---------------------------------------

def preview(images, augmentation, n=8, seed=0):
    """A Figure: one row per patch, its original then ``n`` augmented versions.

    ``images``: one patch (h, w, 3) or several (k, h, w, 3), uint8 or float in [0, 255].
    """
    import matplotlib.pyplot as plt

    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"preview wants images (k, h, w, 3); got shape {images.shape}")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 255:
        raise ValueError(f"preview wants values in [0, 255]; got [{low}, {high}]")
    layer = by_name(augmentation, seed)
    copies = np.repeat(images, n, axis=0)  # every copy gets its own random draw
    out = copies if layer is None else np.asarray(layer(copies, training=True))
    out = out.reshape((len(images), n) + images.shape[1:])
    rows, cols = len(images), n + 1
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.15), layout="constrained",
                             squeeze=False)
    for r in range(rows):
        for c, img in enumerate([images[r], *out[r]]):
            axes[r, c].imshow(np.clip(np.rint(img), 0, 255).astype(np.uint8))
            axes[r, c].axis("off")
    axes[0, 0].set_title("original", fontsize=8)
    for c in range(1, cols):
        axes[0, c].set_title(f"#{c}", fontsize=8)
    name = augmentation if isinstance(augmentation, str) else getattr(layer, "name", "custom")
    fig.suptitle(f"augmentation: {name}", fontsize=10)
    return fig
