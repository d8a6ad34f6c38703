"""Data augmentation for the 50x50 H&E patches, as Keras layers on float32 in [0, 255].

``by_name(name, seed)`` builds the recipes of ``AUGMENTATIONS``. Every layer keeps shape, dtype float32
and the range [0, 255], so it runs before a pretrained model's ``preprocess_input`` (which changes the
range), augments only with ``training=True`` (``fit``, not ``predict``), and draws per image.

Seeds: a seeded layer draws from a Keras ``SeedGenerator``, a counter stored in the layer, so each call
draws new values; two layers with the same seed give the same outputs for the same calls, eagerly and
in a one-thread tf.data map (``apply``).
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

    Optical density is -ln((x + 1) / 256): white is exactly 0, black finite, no clamp. Unlike
    ``skimage.color.rgb2hed``, negative concentrations are kept, so ``hed_to_rgb`` inverts it exactly.
    """
    od = -tf.math.log((tf.cast(images, tf.float32) + 1.0) / 256.0) / OD_UNIT
    return tf.tensordot(od, tf.constant(HED_FROM_RGB, tf.float32), axes=1)


def hed_to_rgb(stains):
    """Stain concentrations -> float RGB, clipped to [0, 255] (inverse of ``rgb_to_hed``)."""
    od = tf.tensordot(stains, tf.constant(RGB_FROM_HED, tf.float32), axes=1)
    return tf.clip_by_value(256.0 * tf.exp(-od * OD_UNIT) - 1.0, 0.0, 255.0)


# --- custom layers ----------------------------------------------------------------

class _RandomImageLayer(keras.layers.Layer):
    """A seeded layer that changes a batch of images in training only; float32 even under a
    mixed-precision policy (float16 would coarsen the pixel values)."""

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        return self.augment(images) if training else images

    def uniform(self, images, low, high, channels=1):
        """One draw per image (shape (n, 1, 1, channels)), to broadcast over its pixels."""
        return keras.random.uniform((tf.shape(images)[0], 1, 1, channels), low, high, seed=self.generator)

    _params = ()  # the float parameters saved in the config, set by _non_negative

    def _non_negative(self, **values):
        for name, value in values.items():
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0; got {value!r}")
            setattr(self, name, float(value))
        self._params = tuple(values)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed, **{k: getattr(self, k) for k in self._params}}


@keras.saving.register_keras_serializable(package="idc")
class Dihedral(_RandomImageLayer):
    """One of the 8 symmetries of the square per image: rotation by k x 90 degrees (k uniform in
    0..3), then a horizontal flip with probability 1/2. Exact: pixels move, none is interpolated
    or invented. Needs square images.
    """

    def build(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        if h is not None and w is not None and h != w:
            raise ValueError(f"Dihedral needs square images; got shape {tuple(input_shape)}")

    def augment(self, images):
        k = keras.random.randint((tf.shape(images)[0],), 0, 4, seed=self.generator)
        # All four rotations of the batch, then each image picks its own: cheap at 50x50
        # and free of per-image Python control flow, so it runs in any graph.
        rotations = tf.stack([tf.image.rot90(images, i) for i in range(4)], axis=1)
        out = tf.gather(rotations, k, axis=1, batch_dims=1)
        return tf.where(self.uniform(images, 0.0, 1.0) < 0.5, tf.reverse(out, axis=[2]), out)


@keras.saving.register_keras_serializable(package="idc")
class StainJitter(_RandomImageLayer):
    """H&E stain jitter (Tellez et al. 2018): per image and stain, the concentration c becomes
    alpha * c + beta, alpha ~ U(1 - sigma, 1 + sigma), beta ~ U(-bias, bias), in H/E/DAB space.

    alpha keeps white glass (density 0) exactly white; beta moves it too: at bias 0.005 by at most
    37 grey levels. Tellez et al. used 0.05 for both, but in skimage's unit beta 0.05 darkens white
    glass to (162, 157, 209) and alpha 0.05 changed nothing visible; hence two parameters, with
    defaults chosen on previews of real patches.
    """

    def __init__(self, sigma=0.2, bias=0.005, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self._non_negative(sigma=sigma, bias=bias)

    def augment(self, images):
        alpha = self.uniform(images, 1.0 - self.sigma, 1.0 + self.sigma, channels=3)
        beta = self.uniform(images, -self.bias, self.bias, channels=3)
        return hed_to_rgb(rgb_to_hed(images) * alpha + beta)


# ITU-R BT.601 luma, the grey of tf.image.rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)


@keras.saving.register_keras_serializable(package="idc")
class ColourJitter(_RandomImageLayer):
    """Per image: brightness shift (fraction of 255), contrast and saturation factors in
    [1 - x, 1 + x], hue shift (fraction of the colour circle), clipped to [0, 255]. Keras'
    RandomSaturation assumes [0, 1]: on [0, 255] it returns negative pixels.
    """

    def __init__(self, brightness=0.05, contrast=0.1, saturation=0.1, hue=0.02, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self._non_negative(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)

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


def _seeds(seed, count):
    """One seed per layer: the same seed in two layers would draw the same numbers."""
    return [None] * count if seed is None else [seed + i for i in range(count)]


# --- the recipes --------------------------------------------------------------

def original_augmentation(seed=None, shear_degrees=0.2, vertical_flip: bool = False) -> keras.Sequential:
    """The seed projects' ImageDataGenerator(rotation_range=20, width_shift_range=0.2,
    height_shift_range=0.2, shear_range=0.2, zoom_range=0.2, horizontal_flip=True), in Keras 3 layers:

    * rotation_range=20 (degrees): RandomRotation(20 / 360), a fraction of a full turn;
    * width/height_shift_range=0.2: RandomTranslation(0.2, 0.2);
    * shear_range=0.2 is an angle in DEGREES (``apply_affine_transform`` calls ``np.deg2rad``), and
      RandomShear's factor a displacement ratio: sin(0.2 degrees) = 0.0035, under 0.2 pixel on a patch.
      Kept for fidelity (``shear_degrees=0`` drops the layer); along one axis, as the seed sheared;
    * zoom_range=0.2 (zx, zy each in [0.8, 1.2]): RandomZoom((-0.2, 0.2), (-0.2, 0.2));
    * horizontal_flip=True: RandomFlip("horizontal"); ``vertical_flip=True`` (the thyroid project's)
      gives RandomFlip("horizontal_and_vertical");
    * fill "nearest", ImageDataGenerator's default, which smears edge pixels into the uncovered
      corners; Keras 3's "reflect" would mirror tissue there instead.

    One difference stays: ImageDataGenerator interpolated once for its whole affine map; here each
    layer interpolates (bilinear) in turn, which softens the patch a little more.
    """
    s = _seeds(seed, 5)
    common = {"fill_mode": "nearest", "dtype": "float32"}
    steps = [layers.RandomRotation(20 / 360, seed=s[0], **common),
             layers.RandomTranslation(0.2, 0.2, seed=s[1], **common)]
    if shear_degrees:
        steps.append(layers.RandomShear(x_factor=math.sin(math.radians(shear_degrees)), seed=s[2], **common))
    steps += [layers.RandomZoom((-0.2, 0.2), (-0.2, 0.2), seed=s[3], **common),
              layers.RandomFlip("horizontal_and_vertical" if vertical_flip else "horizontal", seed=s[4],
                                dtype="float32")]
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

    ``augmentation``: a name of ``AUGMENTATIONS``, a Keras layer or a function of a batch.
    ``parallel`` maps on several threads, which race for the seed counter: no two runs alike. In one
    thread a seeded run repeats exactly, and on 2 cores it was as fast (about 1,000 patches/s).
    ``epoch`` (a number or scalar tensor) keys every draw on (epoch, batch), so a run resumed at that
    epoch draws what the uninterrupted one drew.
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
    """A Figure: one row per patch (``images``: (h, w, 3) or (k, h, w, 3), in [0, 255]), its original
    then ``n`` augmented versions."""
    import matplotlib.pyplot as plt

    images = np.asarray(images, dtype=np.float32)
    images = images[None] if images.ndim == 3 else images
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
            if r == 0:
                axes[r, c].set_title(f"#{c}" if c else "original", fontsize=8)
    name = augmentation if isinstance(augmentation, str) else getattr(layer, "name", "custom")
    fig.suptitle(f"augmentation: {name}", fontsize=10)
    return fig
