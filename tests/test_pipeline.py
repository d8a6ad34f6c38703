import numpy as np
import pytest
from conftest import patch_path, write_patch

from helpers.data import pipeline
from helpers.data.index import DataError, build_index


def test_pad_patch_fills_right_and_bottom_with_white():
    arr = np.zeros((37, 20, 3), dtype=np.uint8)
    out = pipeline.pad_patch(arr)
    assert out.shape == (50, 50, 3) and out.dtype == np.uint8
    assert (out[:37, :20] == 0).all()
    assert (out[37:] == 255).all() and (out[:, 20:] == 255).all()
    big = np.zeros((60, 60, 3), dtype=np.uint8)
    assert pipeline.pad_patch(big).shape == (50, 50, 3)


def test_load_patch_converts_rgba_and_grayscale(tmp_path):
    rgba = write_patch(tmp_path / "a.png", size=(20, 50), colour=(10, 20, 30), mode="RGBA")
    gray = write_patch(tmp_path / "g.png", colour=(90, 90, 90), mode="L")
    a = pipeline.load_patch(rgba)
    assert a.shape == (50, 50, 3) and tuple(a[0, 0]) == (10, 20, 30) and tuple(a[0, 30]) == (255, 255, 255)
    g = pipeline.load_patch(gray)
    assert g.shape == (50, 50, 3) and len(set(g[10, 10])) == 1


@pytest.fixture
def small_index(tree):
    write_patch(patch_path(tree, 2, 101, 1, 0), size=(50, 30), colour=(0, 0, 0))
    write_patch(patch_path(tree, 2, 101, 51, 1), mode="RGBA", colour=(5, 6, 7))
    df, _ = build_index(tree)
    return df


def test_tf_data_matches_pil_and_pads_white(small_index):
    images, labels = pipeline.load_arrays(small_index)
    ds = pipeline.make_dataset(small_index, batch_size=5)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [5, 5, 2]
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert x.dtype == np.float32 and x.shape == (12, 50, 50, 3)
    np.testing.assert_array_equal(x.astype(np.uint8), images)
    np.testing.assert_array_equal(y, labels)
    small = small_index.index[(small_index.height == 30)][0]
    assert (x[small, 30:] == 255).all() and (x[small, :30] == 0).all()


def test_resize_preprocess_one_hot_and_shuffle(small_index):
    ds = pipeline.make_dataset(small_index, batch_size=4, image_size=75,
                               preprocess=lambda t: t / 127.5 - 1, one_hot=True,
                               shuffle=True, seed=1, cache=True)
    x, y = next(iter(ds))
    assert x.shape == (4, 75, 75, 3) and y.shape == (4, 2)
    assert float(x.numpy().min()) >= -1 and float(x.numpy().max()) <= 1
    epoch1 = np.concatenate([b[1].numpy().argmax(1) for b in ds])
    assert sorted(epoch1) == sorted(small_index["label"])


def test_pack_round_trip_and_dataset_from_arrays(small_index, tmp_path):
    npy = pipeline.pack(small_index, tmp_path / "cache" / "idc", progress=False)
    assert npy.name == "idc.npy"
    images, table = pipeline.load_pack(tmp_path / "cache" / "idc")
    expected, labels = pipeline.load_arrays(small_index)
    np.testing.assert_array_equal(np.asarray(images), expected)
    assert table["path"].tolist() == small_index["path"].tolist()
    assert table["patient"].dtype == object or str(table["patient"].dtype).startswith("str")
    assert pipeline.pack_is_current(small_index, tmp_path / "cache" / "idc")
    assert not pipeline.pack_is_current(small_index.iloc[1:], tmp_path / "cache" / "idc")
    ds = pipeline.make_dataset(images=images, labels=table["label"].to_numpy(), batch_size=12)
    x, y = next(iter(ds))
    np.testing.assert_array_equal(x.numpy().astype(np.uint8), expected)
    assert not list((tmp_path / "cache").glob(".*")), "temporary files left behind"


def test_bad_inputs_raise_clearly(small_index, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        pipeline.load_pack(tmp_path / "missing")
    with pytest.raises(ValueError, match="either df"):
        pipeline.make_dataset(small_index, images=np.zeros((1, 50, 50, 3), np.uint8), labels=[0])
    with pytest.raises(DataError, match="empty"):
        pipeline.make_dataset(small_index.iloc[:0])
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        pipeline.make_dataset(images=np.zeros((2, 50, 50, 3), np.uint8), labels=[0, 1, 0])


def test_to_model_input_matches_the_pipeline(tree):
    import keras

    from helpers.data.index import build_index

    df, _ = build_index(tree)
    images, _ = pipeline.load_arrays(df)
    prep = keras.applications.xception.preprocess_input
    x = pipeline.to_model_input(images, 71, prep)
    batch = next(iter(pipeline.make_dataset(df, batch_size=len(df), image_size=71, preprocess=prep)))[0]
    np.testing.assert_allclose(x, np.asarray(batch), atol=1e-5)
    assert x.shape == (len(df), 71, 71, 3) and x.dtype == np.float32
    with pytest.raises(ValueError, match="shape"):
        pipeline.to_model_input(images[0])


def test_pack_in_parallel_writes_the_same_file(tmp_path):
    from helpers.data.demo import make_demo

    make_demo(tmp_path / "demo", n_patients=4, seed=2)
    df, _ = build_index(tmp_path / "demo")
    assert len(df) > 300  # several chunks, so that two workers share the file
    one = np.load(pipeline.pack(df, tmp_path / "one", progress=False, workers=1, chunk=100))
    two = np.load(pipeline.pack(df, tmp_path / "two", progress=False, workers=2, chunk=100))
    images, _ = pipeline.load_arrays(df)
    assert np.array_equal(one, images) and np.array_equal(two, images)


@pytest.mark.parametrize("balance", [False, True])
def test_arrays_reach_batches_with_their_own_labels(balance):
    # image i holds i // 256 in its red channel and i % 256 in its green: each batch row must be
    # a whole image whose number matches its label (i % 2), in a shuffled but seeded order
    n = 1000
    rows = np.arange(n)
    images = np.zeros((n, 50, 50, 3), np.uint8)
    images[..., 0] = (rows // 256)[:, None, None]
    images[..., 1] = (rows % 256)[:, None, None]

    def epoch(ds):
        seen = []
        for x, y in ds:
            x = x.numpy()
            assert x.dtype == np.float32 and x.shape[1:] == (50, 50, 3)
            assert (x == x[:, :1, :1, :]).all()  # every row is one whole image
            number = (256 * x[:, 0, 0, 0] + x[:, 0, 0, 1]).astype(int)
            assert np.array_equal(number % 2, y.numpy())
            seen += number.tolist()
        return seen

    make = lambda: pipeline.make_dataset(images=images, labels=rows % 2, batch_size=64, shuffle=True,  # noqa: E731
                                         seed=5, balance=balance)
    ds = make()
    first, second = epoch(ds), epoch(ds)
    assert len(first) == n and first != second  # reshuffled every epoch
    assert epoch(make()) == first  # the same seed, the same order
    if balance:
        assert 0.4 < np.mean(np.array(first) % 2) < 0.6
    else:
        assert sorted(first) == rows.tolist() and first != rows.tolist()


@pytest.mark.parametrize("kind", ["rgba", "grey16", "rgb16", "palette_transparent", "grey"])
def test_to_rgb_gives_what_tensorflows_png_decoder_gives(kind, tmp_path):
    """Training decodes with TensorFlow, the index, pack and the app with PIL: one file, one answer."""
    import io

    import tensorflow as tf
    from PIL import Image

    from helpers.data.pipeline import load_patch, to_rgb

    rng = np.random.default_rng(1)
    path = tmp_path / f"{kind}.png"
    if kind == "rgba":
        Image.fromarray(rng.integers(0, 256, (50, 50, 4), dtype=np.uint8), "RGBA").save(path)
    elif kind == "grey16":
        Image.fromarray(rng.integers(0, 65536, (50, 50), dtype=np.uint16)).save(path)
    elif kind == "rgb16":  # PIL cannot write one: TensorFlow encodes it
        tf.io.write_file(str(path), tf.io.encode_png(rng.integers(0, 65536, (50, 50, 3), dtype=np.uint16)))
    elif kind == "palette_transparent":
        im = Image.fromarray(rng.integers(0, 4, (50, 50), dtype=np.uint8), "P")
        im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
        im.info["transparency"] = 0
        im.save(path, transparency=0)
    else:
        Image.fromarray(rng.integers(0, 256, (50, 50), dtype=np.uint8), "L").save(path)
    expected = tf.io.decode_png(path.read_bytes(), channels=3).numpy()
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        np.testing.assert_array_equal(to_rgb(im), expected)
    np.testing.assert_array_equal(load_patch(path), expected)
    if kind == "grey16":
        assert expected.mean() < 200  # PIL's own conversion made this patch white


def test_a_patch_cut_short_after_indexing_is_named_when_training_reads_it(small_index):
    import tensorflow as tf

    df = small_index.iloc[:4].reset_index(drop=True)
    assert len(list(pipeline.make_dataset(df, batch_size=2))) == 2  # whole files decode
    victim = df["path"].iloc[2]
    data = open(victim, "rb").read()
    open(victim, "wb").write(data[:-12])  # the IEND chunk gone, as a cut-short copy leaves it
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"not a whole PNG file.*{victim}"):
        list(pipeline.make_dataset(df, batch_size=2))


@pytest.mark.parametrize("options", [{"shuffle": True}, {"balance": True}, {"shuffle": True, "augment": "histology"}])
def test_a_training_set_keys_each_epoch_on_its_number(options):
    # train.fit trains on ds.epochs(start, stop): epoch 1 must be the same batches whether the
    # run began at epoch 0 or was resumed at 1, and differ from epoch 0.
    rng = np.random.default_rng(0)
    labels = (np.arange(96) % 4 == 0).astype(np.int32)
    images = rng.integers(0, 256, (96, 50, 50, 3), dtype=np.uint8)
    ds = pipeline.make_dataset(images=images, labels=labels, batch_size=16, seed=5, **options)
    assert ds.steps == 6
    both = [x.numpy() for x, _ in ds.epochs(0, 2)]
    resumed = [x.numpy() for x, _ in ds.epochs(1, 2)]
    assert len(both) == 12 and len(resumed) == 6
    assert all(np.array_equal(a, b) for a, b in zip(both[6:], resumed))
    assert not np.array_equal(both[0], both[6])
    shares = np.concatenate([y.numpy() for _, y in ds.epochs(0, 4)]).mean()
    assert shares == pytest.approx(0.5 if options.get("balance") else 0.25, abs=0.1)
    first = [x.numpy() for x, _ in ds.calibration.take(2)]
    again = [x.numpy() for x, _ in ds.calibration.take(2)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again)), "BatchNorm's batches are fixed"
    raw = images.astype(np.float32).reshape(96, -1)
    rows = {tuple(r[:8]) for r in raw}
    assert all(tuple(r[:8]) in rows for r in first[0].reshape(16, -1)), "calibration images are not augmented"
