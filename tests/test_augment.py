import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from helpers.data import augment  # noqa: E402

NAMES = list(augment.AUGMENTATIONS)


def smooth_field(rng, n, size=50, cells=5):
    """Smooth random maps in [0, 1] (n, size, size): blobs, like tissue, not noise."""
    coarse = rng.uniform(0, 1, (n, cells, cells, 1)).astype(np.float32)
    return tf.image.resize(coarse, (size, size), method="bicubic").numpy()[..., 0].clip(0, 1)


@pytest.fixture
def he_batch(rng):
    """Eight synthetic H&E patches: haematoxylin and eosin maps turned into RGB, with
    concentrations up to about the 95th percentile of real patches (0.06 and 0.04)."""
    stains = np.stack([0.08 * smooth_field(rng, 8), 0.05 * smooth_field(rng, 8),
                       np.zeros((8, 50, 50), np.float32)], axis=-1)
    return augment.hed_to_rgb(stains).numpy()


@pytest.fixture
def batch(rng):
    """Random pixels plus the extremes: an all-black and an all-white patch."""
    x = rng.uniform(0, 255, (6, 50, 50, 3)).astype(np.float32)
    x[4], x[5] = 0.0, 255.0
    return x


def run(ds):
    images, labels = zip(*ds.as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


def dataset(images):
    labels = tf.one_hot(np.arange(len(images)) % 2, 2)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(4), labels.numpy()


def grey(images):
    return np.asarray(images) @ np.array(augment.LUMA, np.float32)


def dihedral_images(img):
    """The 8 symmetries of a square image: 4 rotations, each with and without a flip."""
    rotations = [np.rot90(img, k) for k in range(4)]
    return rotations + [r[:, ::-1] for r in rotations]


@pytest.mark.parametrize("name", NAMES)
def test_every_augmentation_keeps_shape_dtype_range_and_labels(name, batch):
    ds, labels = dataset(batch)
    images, out_labels = run(augment.apply(ds, name, seed=0))
    assert images.shape == batch.shape and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255
    np.testing.assert_array_equal(out_labels, labels)


def test_none_is_the_identity(batch):
    ds, _ = dataset(batch)
    assert augment.apply(ds, "none") is ds
    assert augment.by_name("none") is None
    np.testing.assert_array_equal(run(augment.apply(ds, "none"))[0], batch)


@pytest.mark.parametrize("name", ["original", "histology", "dihedral"])
def test_layers_change_nothing_outside_training(name, batch):
    layer = augment.by_name(name, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(batch, training=False)), batch)


def test_dihedral_is_exact_and_reaches_all_eight_symmetries(rng):
    img = rng.integers(0, 256, (50, 50, 3)).astype(np.float32)
    targets = dihedral_images(img)
    assert len({t.tobytes() for t in targets}) == 8  # the test image has no symmetry
    out = np.asarray(augment.Dihedral(seed=0)(np.repeat(img[None], 64, axis=0), training=True))
    found = [[np.array_equal(o, t) for t in targets].index(True) for o in out]  # ValueError if none
    assert sorted(set(found)) == list(range(8))


def test_dihedral_recipe_only_moves_pixels(he_batch):
    out = np.asarray(augment.by_name("dihedral", seed=0)(he_batch, training=True))
    for o, img in zip(out, he_batch):
        assert any(np.array_equal(o, t) for t in dihedral_images(img))  # no colour changed
    assert not np.array_equal(out, he_batch)  # 8 patches: some left the identity


def test_dihedral_refuses_non_square_images():
    with pytest.raises(ValueError, match=r"\(2, 40, 50, 3\)"):
        augment.Dihedral(seed=0)(np.zeros((2, 40, 50, 3), np.float32))


def test_stain_matrix_is_ruifrok_johnston_with_one_row_per_stain():
    np.testing.assert_allclose(augment.HED_FROM_RGB @ augment.RGB_FROM_HED, np.eye(3), atol=1e-12)
    pure = np.array([[0.2, 0, 0], [0, 0.2, 0]], np.float32)
    haematoxylin, eosin = augment.hed_to_rgb(pure).numpy()
    assert haematoxylin[2] > haematoxylin[0] > haematoxylin[1]  # blue-purple
    assert eosin[0] > eosin[2] > eosin[1]  # pink
    np.testing.assert_allclose(augment.rgb_to_hed(np.stack([haematoxylin, eosin])).numpy(), pure, atol=1e-4)


def test_stain_jitter_with_zero_sigma_is_the_identity(batch):
    out = np.asarray(augment.StainJitter(sigma=0, bias=0, seed=0)(batch, training=True))
    assert np.abs(out - batch).max() < 1.0


def test_stain_jitter_changes_colour_but_keeps_structure(he_batch):
    out = np.asarray(augment.StainJitter(seed=0)(he_batch, training=True))
    colour_shift = np.abs(out.mean(axis=(1, 2)) - he_batch.mean(axis=(1, 2))).max(axis=1)
    assert (colour_shift > 2.0).all()  # every patch recoloured, by 4.6 to 21 grey levels here
    for a, b in zip(grey(out), grey(he_batch)):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_stain_jitter_keeps_white_white_unless_a_stain_is_added():
    white = np.full((16, 4, 4, 3), 255.0, np.float32)
    scaled = np.asarray(augment.StainJitter(sigma=0.5, bias=0, seed=0)(white, training=True))
    assert np.abs(scaled - 255).max() < 0.01  # optical density 0 times alpha is 0
    bias = 0.005
    shifted = np.asarray(augment.StainJitter(sigma=0, bias=bias, seed=0)(white, training=True))
    darkest = 256 * np.exp(-bias * augment.OD_UNIT * augment.RGB_FROM_HED.sum(axis=0)) - 1
    assert (shifted >= darkest - 0.01).all()  # at most 37 grey levels (green)
    assert (shifted < 254).any()  # beta does tint some of the glass


def test_original_augmentation_moves_pixels_but_keeps_the_mean_colour(he_batch):
    out = np.asarray(augment.original_augmentation(seed=0)(he_batch, training=True))
    assert np.abs(out - he_batch).mean() > 2.0
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), he_batch.mean(axis=(0, 1, 2)), atol=5.0)


def test_original_shear_is_the_seed_projects_angle_in_degrees():
    shear = augment.original_augmentation().get_layer(index=2)
    assert shear.x_factor == pytest.approx((-0.00349, 0.00349), abs=1e-5)
    assert len(augment.original_augmentation(shear_degrees=0).layers) == 4


@pytest.mark.parametrize("name", ["original", "histology"])
def test_same_seed_same_output_and_new_draws_per_call(name, batch):
    a, b, c = (augment.by_name(name, seed=s) for s in (1, 1, 2))
    first = np.asarray(a(batch, training=True))
    np.testing.assert_array_equal(first, np.asarray(b(batch, training=True)))
    assert not np.array_equal(first, np.asarray(c(batch, training=True)))
    assert not np.array_equal(first, np.asarray(a(batch, training=True)))  # next batch: new draws


def test_apply_with_a_seed_repeats_exactly(batch):
    ds, _ = dataset(np.concatenate([batch] * 4))
    first, again = (run(augment.apply(ds, "histology", seed=3))[0] for _ in range(2))
    np.testing.assert_array_equal(first, again)


def test_unknown_names_and_bad_inputs_are_refused(batch):
    ds, _ = dataset(batch)
    with pytest.raises(ValueError, match="'flip'.*none, original, original_both_flips, histology"):
        augment.apply(ds, "flip")
    with pytest.raises(ValueError, match=r"\(50, 50, 3\)"):
        augment.apply(ds.unbatch(), "original")
    with pytest.raises(ValueError, match="hue must be >= 0; got -0.1"):
        augment.ColourJitter(hue=-0.1)


def test_preview_shows_each_patch_with_n_variants(batch):
    fig = augment.preview(batch[:3].astype(np.uint8), "histology", n=4)
    assert len(fig.axes) == 3 * 5
    plt.close(fig)
    fig = augment.preview(batch[0], "none", n=2)
    assert len(fig.axes) == 3
    plt.close(fig)
    with pytest.raises(ValueError, match="0, 255"):
        augment.preview(batch / 255 - 0.5, "original")
