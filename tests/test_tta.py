import keras
import numpy as np
import pytest

from helpers.recipes.tta import VIEWS, dihedral_views, predict_batches, predict_tta, predict_views, view


@pytest.fixture
def asymmetric(rng):
    return rng.integers(0, 256, size=(2, 6, 6, 3)).astype(np.uint8)


def test_the_eight_views_are_distinct_and_the_first_is_the_batch(asymmetric):
    views = dihedral_views(asymmetric)
    assert len(views) == 8
    np.testing.assert_array_equal(views[0], asymmetric)
    flat = {v.tobytes() for v in views}
    assert len(flat) == 8


def test_the_views_form_the_dihedral_group(asymmetric):
    views = dihedral_views(asymmetric)
    keys = [v.tobytes() for v in views]
    for k, flip in VIEWS:  # closed under composition: a view of a view is a view
        for v in views:
            assert view(v, k, flip).tobytes() in keys
    # each view has an inverse among the views
    for v in views:
        assert any(view(v, k, f).tobytes() == keys[0] for k, f in VIEWS)


def test_views_are_rotations_and_mirrors(asymmetric):
    views = dihedral_views(asymmetric)
    np.testing.assert_array_equal(views[2], np.rot90(asymmetric, 1, axes=(1, 2)))
    np.testing.assert_array_equal(views[1], asymmetric[:, :, ::-1])
    with pytest.raises(ValueError, match="square"):
        dihedral_views(np.zeros((1, 4, 5, 3)))


def _model(pool: bool):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x) if pool else keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def test_tta_is_exact_on_a_rotation_invariant_model(rng):
    images = rng.integers(0, 256, size=(5, 8, 8, 3)).astype(np.uint8)
    model = _model(pool=True)
    np.testing.assert_allclose(predict_tta(model, images, batch_size=2),
                               predict_batches(model, images, batch_size=2), atol=1e-6)


def test_tta_is_the_mean_over_the_eight_transformed_inputs(rng):
    images = rng.integers(0, 256, size=(5, 8, 8, 3)).astype(np.uint8)
    model = _model(pool=False)
    explicit = []
    for k in range(4):
        for flip in (False, True):
            x = np.rot90(images, k, axes=(1, 2))
            x = np.flip(x, axis=2) if flip else x
            explicit.append(np.asarray(model(x.astype("float32"), training=False)))
    expected = np.mean(explicit, axis=0)
    got = predict_tta(model, images, batch_size=3)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not np.allclose(got, predict_batches(model, images), atol=1e-4)  # not invariant: TTA changes it


def test_predict_views_gives_each_view_and_the_first_is_the_plain_prediction(rng):
    images = rng.integers(0, 256, size=(5, 8, 8, 3)).astype(np.uint8)
    model = _model(pool=False)
    per_view = predict_views(model, images, batch_size=2)
    assert per_view.shape == (8, 5, 2)
    np.testing.assert_array_equal(per_view[0], predict_batches(model, images, batch_size=2))
    np.testing.assert_allclose(per_view[3], predict_batches(model, view(images, *VIEWS[3])), atol=1e-6)
    np.testing.assert_allclose(per_view.mean(axis=0), predict_tta(model, images, batch_size=2), atol=1e-12)
