"""From the index to batches: tf.data from PNG files, and a packed uint8 array.

Border patches (smaller than 50x50) are padded on the right and bottom with white (255): the missing
part is beyond the slide's edge, where a scan shows empty glass. Black padding would draw a hard dark
edge that a CNN can learn as a shortcut for "border patch".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from ..io import atomic_path, file_workers, process_map
from .index import DataError, PATCH


def to_rgb(im: Image.Image) -> np.ndarray:
    """uint8 RGB as TensorFlow's PNG decoder (``channels=3``, what training sees) gives it, so a file
    gets one answer on every path: 16-bit samples keep their high byte (PIL's own conversion clips
    them: a 16-bit grey patch turns white), alpha is dropped, grey and palette images expanded."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = (np.asarray(im, dtype=np.int64) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "P":  # a palette's transparency is alpha too: dropped, as the decoder does
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"))


def load_patch(path) -> np.ndarray:
    """One patch as uint8 RGB (50, 50, 3), padded with white at right/bottom."""
    with Image.open(path) as im:
        return pad_patch(to_rgb(im))


def pad_patch(arr: np.ndarray) -> np.ndarray:
    arr = arr[:PATCH, :PATCH]
    h, w = arr.shape[:2]
    if (h, w) == (PATCH, PATCH):
        return arr
    out = np.full((PATCH, PATCH, 3), 255, dtype=np.uint8)
    out[:h, :w] = arr
    return out


def load_arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Decode every patch with PIL into one array (what the seed projects did)."""
    images = np.empty((len(df), PATCH, PATCH, 3), dtype=np.uint8)
    for i, path in enumerate(df["path"]):
        images[i] = load_patch(path)
    return images, df["label"].to_numpy(dtype=np.int32)


# --- packed form -------------------------------------------------------------

def pack(df: pd.DataFrame, path, progress: bool = True, workers: int | None = None, chunk: int = 4096) -> Path:
    """Decode the index once into ``<path>.npy`` (uint8, N x 50 x 50 x 3) and ``<path>.csv`` (its rows,
    in order), both atomically. ``workers`` processes (None: ``io.file_workers()``) decode, each into its
    own rows."""
    path = Path(path).with_suffix("")
    npy, table = path.with_suffix(".npy"), path.with_suffix(".csv")
    paths = df["path"].astype(str).tolist()
    with atomic_path(npy) as tmp:
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(df), PATCH, PATCH, 3))
        chunks = [(tmp, start, paths[start:start + chunk]) for start in range(0, len(paths), chunk)]
        with tqdm(total=len(paths), disable=not progress, desc="pack", unit="img") as bar:
            for done in process_map(_pack_rows, chunks, workers or file_workers(), spawn_under_tensorflow=True):
                bar.update(done)
    with atomic_path(table) as tmp:
        df.drop(columns=["split"], errors="ignore").to_csv(tmp, index=False)
    return npy


def _pack_rows(job) -> int:
    """Decode ``paths`` into rows ``start...`` of the pack file being written."""
    file, start, paths = job
    out = np.load(file, mmap_mode="r+")
    for i, p in enumerate(paths):
        out[start + i] = load_patch(p)
    out.flush()
    return len(paths)


def load_pack(path, mmap: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Reload a pack: (images, index); with ``mmap`` the array stays on disk until read."""
    path = Path(path).with_suffix("")
    npy, table = path.with_suffix(".npy"), path.with_suffix(".csv")
    for f in (npy, table):
        if not f.is_file():
            raise DataError(f"pack file {f} does not exist; make it with pack()")
    images = np.load(npy, mmap_mode="r" if mmap else None)
    df = pd.read_csv(table, dtype={"patient": str})
    if len(df) != len(images):
        raise DataError(f"pack {npy} holds {len(images)} images but {table} lists {len(df)}")
    return images, df


def pack_is_current(df: pd.DataFrame, path) -> bool:
    """True if the pack at ``path`` holds exactly the patches of ``df``, in order."""
    try:
        _, packed = load_pack(path)
    except DataError:
        return False
    return packed["path"].tolist() == df["path"].tolist()


# --- tf.data (each function imports TensorFlow: indexing and EDA do not need it) ---------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC


def decode_png(path):
    """A tf.data map: file path -> uint8 (50, 50, 3), white-padded."""
    import tensorflow as tf

    raw = tf.io.read_file(path)
    # A file cut short (a partial copy or download) fails here with its name; decode_png's own
    # "Invalid PNG data" names none.
    whole = tf.logical_and(tf.strings.substr(raw, 0, 8) == PNG_SIGNATURE,
                           tf.strings.substr(raw, -12, 12, unit="BYTE") == PNG_END)
    with tf.control_dependencies([tf.debugging.Assert(whole, ["not a whole PNG file:", path])]):
        img = tf.io.decode_png(raw, channels=3)
    # pad_to_bounding_box fills with 0; invert, pad, invert back to fill with 255
    return 255 - tf.image.pad_to_bounding_box(255 - img[:PATCH, :PATCH], 0, 0, PATCH, PATCH)


def make_dataset(df: pd.DataFrame | None = None, *, images: np.ndarray | None = None, labels=None,
                 batch_size: int = 64, image_size: int = PATCH, preprocess=None, augment=None,
                 shuffle: bool = False, cache: bool = False, seed: int = 0, one_hot: bool = False,
                 balance: bool = False):
    """A batched ``tf.data.Dataset`` of (image, label).

    The source is the index ``df`` (PNG files, decoded in parallel) or a pack's arrays (``images``
    uint8 N x 50 x 50 x 3 and ``labels``). Images reach ``preprocess`` (the model's own, or None) as
    float32 in [0, 255], resized to ``image_size`` (Xception needs >= 71). ``augment`` (a name of
    ``augment.AUGMENTATIONS``, a layer or a function) runs on training batches after caching, before
    ``preprocess``. ``cache`` keeps the decoded patches in memory. ``balance`` (it shuffles) draws
    negatives and positives 50/50, as many per epoch as there are patches.

    A training set (shuffled, balanced or augmented) also has, for ``train.fit``: ``epochs(start,
    stop)``, those epochs' passes, each keyed on its number (a resumed run sees the batches the
    uninterrupted one saw); ``steps`` per epoch; and ``calibration``, fixed batches, shuffled but not
    augmented, for BatchNorm statistics. Iterated itself, it draws a new epoch key at each pass.
    """
    import tensorflow as tf

    auto = tf.data.AUTOTUNE
    if (df is None) == (images is None):
        raise ValueError("give either df (PNG files) or images (a packed array), not both")
    if df is not None:
        if len(df) == 0:
            raise DataError("make_dataset got an empty index")
        labels = df["label"].to_numpy(dtype=np.int32)
        paths = tf.constant(df["path"].to_numpy(dtype=str))
    else:
        labels = np.asarray(labels, dtype=np.int32)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
    n = len(labels)
    keyed = shuffle or balance or augment is not None
    if keyed:
        # tf.data pairs an op's seed with TensorFlow's global seed, so the same ``seed``
        # would draw differently after an earlier run had set the global one.
        tf.random.set_seed(seed)

    def decode(ds):
        # deterministic: in-order results (decoding still runs in parallel), or a rerun with
        # the same seed would batch other patches together and end with other metrics.
        return ds.map(lambda p, y: (decode_png(p), y), num_parallel_calls=auto, deterministic=True)

    if df is not None:
        source = decode(tf.data.Dataset.from_tensor_slices((paths, labels)))
        if cache:  # cache uint8 patches, before resizing: 4x smaller than float32
            source = source.cache()
    else:
        # Row numbers stand in for the images until a batch is formed (gather): TensorFlow never
        # copies the array, which may be the whole 2 GB set.
        source = tf.data.Dataset.from_tensor_slices((np.arange(n, dtype=np.int64), labels))

    def ordered(epoch):
        """The examples in epoch ``epoch``'s order (a tensor; None: as given), keyed on (seed, epoch)."""
        if epoch is None or not (shuffle or balance):
            return source
        if balance:
            order = _balanced_order(labels, n, seed, epoch)
        else:
            order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                             seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        if df is not None and cache:  # the cached patches as one tensor, taken in this order
            return source.batch(n).map(lambda x, y: (tf.gather(x, order), tf.gather(y, order))).unbatch()
        if df is not None:  # file names shuffle cheaply before decoding
            return decode(tf.data.Dataset.from_tensor_slices((tf.gather(paths, order), tf.gather(labels, order))))
        return tf.data.Dataset.from_tensor_slices((order, tf.gather(labels, order)))

    def to_input(x, y):
        x = tf.cast(x, tf.float32)
        return (x if image_size == PATCH else tf.image.resize(x, (image_size, image_size), method="bilinear")), y

    def finish(x, y):
        return (x if preprocess is None else preprocess(x)), (tf.one_hot(y, 2) if one_hot else y)

    def gather(rows, y):  # numpy reads the rows of a batch: TensorFlow never copies the whole array
        x = tf.numpy_function(lambda r: images[r], [rows], tf.uint8, stateful=False)
        x.set_shape((None, *images.shape[1:]))
        return x, y

    def one_pass(epoch=None, augmented=True):
        ds = ordered(epoch).batch(batch_size)
        if images is not None:
            ds = ds.map(gather, num_parallel_calls=auto, deterministic=True)
        ds = ds.map(to_input, num_parallel_calls=auto)
        if augment is not None and augmented:  # on [0, 255] images, before a backbone's own scaling
            # One thread: parallel calls race for the augmentation's seed counter, and a
            # seeded run would not repeat (see augment.apply).
            ds = augment_mod.apply(ds, layer, seed=seed, epoch=epoch)
        return ds.map(finish, num_parallel_calls=auto)

    if not keyed:
        return one_pass().prefetch(auto)
    from . import augment as augment_mod

    layer = augment_mod.by_name(augment, seed)  # one layer for every pass: one set of seed counters
    # a new epoch key at each iteration; bounded, as augment.apply multiplies it
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    ds = keys.flat_map(lambda key: one_pass(key % 2**30)).prefetch(auto)
    ds.epochs = lambda start, stop: tf.data.Dataset.range(start, stop).flat_map(one_pass).prefetch(auto)
    ds.steps = -(-n // batch_size)
    ds.calibration = one_pass(tf.constant(-1, tf.int64), augmented=False).prefetch(auto)
    return ds


def _balanced_order(labels, n, seed, epoch):
    """``n`` row numbers keyed on (seed, epoch): each place takes a class with probability 1/2, and each
    class's rows come in a random order, repeated as often as needed."""
    import tensorflow as tf

    counts = np.bincount(np.asarray(labels, dtype=int), minlength=2)
    if (counts[:2] == 0).any():
        raise ValueError(f"balanced sampling needs both classes; the labels hold {counts[:2].tolist()}")

    def key(part):
        return tf.stack([tf.constant(seed * 3 + part, tf.int64), tf.cast(epoch, tf.int64)])

    positive = tf.random.stateless_uniform([n], seed=key(0)) < 0.5
    places, rows = [], []
    for c, at in enumerate((tf.where(~positive)[:, 0], tf.where(positive)[:, 0])):
        members = np.flatnonzero(np.asarray(labels) == c).astype(np.int64)
        cycle = tf.random.experimental.stateless_shuffle(tf.range(len(members) * -(-n // len(members)),
                                                                  dtype=tf.int64), seed=key(c + 1))
        places.append(tf.cast(at, tf.int32))
        rows.append(tf.gather(members, cycle[:tf.size(at)] % len(members)))
    return tf.dynamic_stitch(places, rows)


def to_model_input(images, image_size: int = PATCH, preprocess=None) -> np.ndarray:
    """uint8 patches (n, 50, 50, 3) as a model takes them, exactly as ``make_dataset`` gives them."""
    import tensorflow as tf

    x = tf.cast(np.asarray(images), tf.float32)
    if x.shape.rank != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected images of shape (n, h, w, 3), got {tuple(x.shape)}")
    if image_size != x.shape[1]:
        x = tf.image.resize(x, (image_size, image_size), method="bilinear")
    return np.asarray(x if preprocess is None else preprocess(x))


@dataclass
class Data:
    """One split of the index and its tf.data pipelines, ready for one model."""

    index: pd.DataFrame  # the sampled patches (or images), with a split column
    train: object
    val: object
    test: object | None
    class_weight: dict
    split_note: str
    image_size: int
    preprocess: object = None
    batch_size: int = 64
    extra: dict = field(default_factory=dict)

    def part(self, name: str) -> pd.DataFrame:
        return self.index[self.index["split"] == name].reset_index(drop=True)
