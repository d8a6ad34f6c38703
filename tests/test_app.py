"""The web app through Flask's test client: which models it offers, what a valid
upload shows (checked against the model itself), and a clear 4xx page, never a
traceback, for every upload or model it cannot use."""

import base64
import io
import json
import os
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import flask  # noqa: F401  (a hard dependency: a broken install fails here, it does not skip)
import keras

from helpers.tools import app as webapp  # noqa: E402
from helpers.data import pipeline  # noqa: E402

CHECKPOINT = "cancernet-epoch01-val_auc0.5000.keras"
SIDECAR = {"model": "cancernet", "image_size": 50, "threshold": 0.9, "generated": True}


# --- shared with test_app_browser.py ----------------------------------------------

def save_model(path, meta=None):
    """An untrained CancerNet (fixed seed) saved at ``path``, with ``meta`` as its sidecar.

    Its BatchNorm statistics are taken from a few noise batches: with the initial
    ones every activation shrinks to ~1e-6 and every image gets p = 0.5000, which
    would hide a mix-up of images or classes.
    """
    import tensorflow as tf

    from helpers import models, train

    keras.utils.set_random_seed(0)
    model = models.build_model("cancernet")
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, (64, 50, 50, 3)) * rng.uniform(0.3, 1, (64, 1, 1, 3))
    train.recalibrate_batchnorm(model, tf.data.Dataset.from_tensor_slices(
        (noise.astype("float32"), np.zeros(64))).batch(16), batches=4)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    if meta is not None:
        path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def png_bytes(size=(50, 50), mode="RGB", fmt="PNG", seed=0):
    """A noisy pink image (something like H&E) encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal((210, 150, 190), 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def shown(html, element_id):
    """The text of the element with ``element_id`` in the page."""
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html)
    assert match, f"no element #{element_id} in the page"
    return match.group(1).strip()


def decode_uri(uri):
    assert uri.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.format == "PNG"
    return image


# --- fixtures -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """An outputs folder as the series leaves it: a model with a sidecar, a run whose
    best checkpoint has none, and files that must not be offered."""
    root = tmp_path_factory.mktemp("outputs")
    model = save_model(root / "models" / "cancernet.keras", SIDECAR)
    run = root / "runs" / "r1"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(model, run / "checkpoints" / CHECKPOINT)
    shutil.copy(model, run / "checkpoints" / "cancernet-epoch00-val_auc0.1000.keras")  # not the best
    (run / "train.json").write_text(json.dumps({"best_checkpoint": f"outputs/runs/r1/checkpoints/{CHECKPOINT}"}))
    for skipped in ("tuner/trial_0/m", "cache/m", ".hidden/m"):
        (root / skipped).parent.mkdir(parents=True)
        shutil.copy(model, root / f"{skipped}.keras")
        (root / f"{skipped}.json").write_text("{}")
    shutil.copy(model, root / "models" / "no_sidecar.keras")
    return root


@pytest.fixture
def client(outputs):
    return webapp.create_app(outputs).test_client()


def ids(outputs):
    return {m.rel: m.id for m in webapp.discover_models(outputs)}


def post(client, model_id, data=None, filename="upload.png"):
    form = {"model": model_id}
    if data is not None:
        form["image"] = (io.BytesIO(data), filename)
    response = client.post("/", data=form, content_type="multipart/form-data")
    return response, response.get_data(as_text=True)


# --- discovery ----------------------------------------------------------------------

def test_discovery_offers_sidecar_models_and_best_checkpoints_only(outputs):
    found = webapp.discover_models(outputs)
    assert [(m.rel, m.source, m.name, m.task) for m in found] == [
        ("models/cancernet.keras", "sidecar", "cancernet", "idc"),
        (f"runs/r1/checkpoints/{CHECKPOINT}", "train.json", "cancernet", "idc"),
    ]
    assert found[0].meta == SIDECAR
    assert found[0].label == "models/cancernet.keras — cancernet, idc (generated demo data)"
    assert found[1].label == f"runs/r1/checkpoints/{CHECKPOINT} — cancernet, idc (best checkpoint of its run)"
    # Ids are stable and say nothing of the path.
    assert [m.id for m in webapp.discover_models(outputs)] == [m.id for m in found]
    assert all(re.fullmatch(r"[0-9a-f]{12}", m.id) for m in found)


def test_discovery_edge_cases(tmp_path):
    root = tmp_path / "outputs"
    assert webapp.discover_models(root) == []  # no folder at all
    (root / "a").mkdir(parents=True)
    (root / "a" / "m.keras").write_bytes(b"x")
    (root / "a" / "m.json").write_text("{not json")
    (root / "b" / "model.keras").parent.mkdir()
    (root / "b" / "model.keras").write_bytes(b"x")
    (root / "b" / "model.json").write_text(json.dumps({"task": "thyroid", "model": "vgg19"}))
    runs = root / "runs"
    # helpers train's layout: out/model.keras (+ .json) is that run's best checkpoint already.
    (runs / "t" / "run0" / "checkpoints").mkdir(parents=True)
    (runs / "t" / "model.keras").write_bytes(b"x")
    (runs / "t" / "model.json").write_text("{}")
    (runs / "t" / "run0" / "checkpoints" / "c.keras").write_bytes(b"x")
    (runs / "t" / "run0" / "train.json").write_text(json.dumps({"best_checkpoint": "elsewhere/c.keras"}))
    # study's layout: <run>/best.keras (+ .json) beside <run>/train.json.
    (runs / "s" / "v_seed1" / "checkpoints").mkdir(parents=True)
    (runs / "s" / "v_seed1" / "checkpoints" / "v-epoch01.keras").write_bytes(b"x")
    (runs / "s" / "v_seed1" / "best.keras").write_bytes(b"x")
    (runs / "s" / "v_seed1" / "best.json").write_text(json.dumps({"model": "vgg16", "task": "thyroid"}))
    (runs / "s" / "v_seed1" / "train.json").write_text(json.dumps({"best_checkpoint": "v-epoch01.keras"}))
    # A best checkpoint that is gone, one outside the folder, a train.json that does not parse.
    (runs / "gone").mkdir()
    (runs / "gone" / "train.json").write_text(json.dumps({"best_checkpoint": "runs/gone/x.keras"}))
    outside = tmp_path / "outside.keras"
    outside.write_bytes(b"x")
    (runs / "out").mkdir()
    (runs / "out" / "train.json").write_text(json.dumps({"best_checkpoint": str(outside)}))
    (runs / "bad").mkdir()
    (runs / "bad" / "train.json").write_text("[")
    (runs / "none").mkdir()
    (runs / "none" / "train.json").write_text(json.dumps({"best_checkpoint": None}))
    found = webapp.discover_models(root)
    assert [(m.rel, m.name, m.task, m.problem) for m in found] == [
        ("a/m.keras", "m", "idc", "m.json unreadable: JSONDecodeError"),
        ("b/model.keras", "vgg19", "thyroid", ""),
        ("runs/s/v_seed1/best.keras", "vgg16", "thyroid", ""),
        ("runs/t/model.keras", "model", "idc", ""),
    ]


# --- pages --------------------------------------------------------------------------

def test_index_lists_the_models_by_id_never_by_path(client, outputs):
    response = client.get("/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    options = re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', html)
    assert options == [(m.id, m.label) for m in webapp.discover_models(outputs)]
    assert 'id="no-models"' not in html


@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_no_model_says_how_to_make_one(tmp_path, folder):
    root = tmp_path / folder
    if folder == "empty":
        root.mkdir()
    client = webapp.create_app(root).test_client()
    html = client.get("/").get_data(as_text=True)
    assert 'id="no-models"' in html and "No saved model yet" in html
    assert "make run-all" in html
    assert "python -m helpers train --model cancernet --data-dir data/idc-sample" in html
    assert "<form" not in html
    response, html = post(client, "0" * 12, png_bytes())
    assert response.status_code == 400 and "No model is saved yet" in html


def test_outputs_folder_by_default():
    assert webapp.create_app().config["OUTPUTS_DIR"] == webapp.config.ROOT / "outputs"


def test_main_binds_to_localhost(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(webapp.Flask, "run", lambda self, **kw: calls.append((self.config["OUTPUTS_DIR"], kw)))
    assert webapp.main(["--port", "5123", "--outputs", str(tmp_path)]) == 0
    assert calls == [(tmp_path, {"host": "127.0.0.1", "port": 5123, "threaded": True})]


# --- a valid upload -----------------------------------------------------------------

def expected_proba(path, data, size=50):
    """IDC probability of the saved model, computed here without the app."""
    model = keras.models.load_model(path, compile=False)
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # alpha dropped, as training decodes
    if pixels.shape[0] <= 50 and pixels.shape[1] <= 50:
        pixels = pipeline.pad_patch(pixels)
    pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))
    return float(model.predict(pipeline.to_model_input(pixels[None], size), verbose=0)[0, 1])


@pytest.mark.parametrize("image, filename", [
    (png_bytes(), "patch.png"),
    (png_bytes(fmt="JPEG"), "patch.jpg"),
    (png_bytes(mode="L"), "grey.png"),  # an ultrasound frame is grey
    (png_bytes(mode="RGBA"), "alpha.png"),
    (png_bytes(size=(40, 50)), "border.png"),  # a border patch: padded with white
    (png_bytes(size=(120, 80), fmt="JPEG"), "frame.jpeg"),  # larger: resized
    (png_bytes(fmt="JPEG"), "named-wrong.gif"),  # the bytes decide, not the name
])
def test_valid_upload_shows_probabilities_and_overlay(client, outputs, image, filename):
    response, html = post(client, ids(outputs)["models/cancernet.keras"], image, filename)
    assert response.status_code == 200, html
    p0, p1 = float(shown(html, "prob-0")), float(shown(html, "prob-1"))
    assert abs(p0 + p1 - 1) <= 1e-4
    assert shown(html, "prob-1") == f"{expected_proba(outputs / 'models' / 'cancernet.keras', image):.4f}"
    assert shown(html, "prediction") == f"Predicted: {'IDC' if p1 >= SIDECAR['threshold'] else 'no IDC'}"
    assert shown(html, "threshold") == "0.9000"
    assert shown(html, "cam-layer") == "block3_pool (MaxPooling2D, 6x6x128)"
    assert 'id="generated-notice"' in html
    for element in ("overlay", "input-image"):
        uri = re.search(rf'id="{element}" src="([^"]+)"', html).group(1)
        assert decode_uri(uri).size == (50, 50)
    assert 'id="error"' not in html


def test_best_checkpoint_without_sidecar_uses_the_defaults(client, outputs):
    data = png_bytes(seed=1)
    response, html = post(client, ids(outputs)[f"runs/r1/checkpoints/{CHECKPOINT}"], data)
    assert response.status_code == 200, html
    p1 = expected_proba(outputs / "runs" / "r1" / "checkpoints" / CHECKPOINT, data)
    assert shown(html, "prob-1") == f"{p1:.4f}" and shown(html, "prob-0") == f"{1 - p1:.4f}"
    assert shown(html, "threshold") == "0.5000" and "the default" in html
    assert shown(html, "prediction") == f"Predicted: {'IDC' if p1 >= 0.5 else 'no IDC'}"
    assert 'id="generated-notice"' not in html


def test_thyroid_sidecar_names_the_classes(tmp_path, outputs):
    root = tmp_path / "outputs"
    (root / "t").mkdir(parents=True)
    shutil.copy(outputs / "models" / "cancernet.keras", root / "t" / "nodule.keras")
    (root / "t" / "nodule.json").write_text(json.dumps({"task": "thyroid", "image_size": 50, "threshold": None}))
    client = webapp.create_app(root).test_client()
    (entry,) = webapp.discover_models(root)
    assert entry.label == "t/nodule.keras — nodule, thyroid"
    response, html = post(client, entry.id, png_bytes(size=(300, 200), mode="L", fmt="JPEG"))
    assert response.status_code == 200, html
    assert re.findall(r"<tr><td>([^<]+)</td>", html) == ["benign", "malignant"]
    assert "Grad-CAM for &ldquo;malignant&rdquo;" in html
    assert shown(html, "threshold") == "0.5000" and "the default" in html


# --- what the app refuses ------------------------------------------------------------

def image_bytes(fmt, size=(50, 50)):
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 100, 150)).save(buffer, format=fmt)
    return buffer.getvalue()


def bomb():
    """A small PNG (1-bit, one colour) that decodes to 30 million pixels."""
    buffer = io.BytesIO()
    Image.new("1", (6000, 5000)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_UPLOADS = {
    "no file": (None, 400, "No file was chosen"),
    "empty file": (b"", 400, "The file is empty"),
    "text renamed .png": (b"patient notes, not pixels\n" * 20, 415, "not an image PIL can read"),
    "GIF": (image_bytes("GIF"), 415, "GIF images are not supported"),
    "BMP": (image_bytes("BMP"), 415, "BMP images are not supported"),
    "TIFF": (image_bytes("TIFF"), 415, "TIFF images are not supported"),
    "truncated PNG": (png_bytes()[:200], 422, "The PNG file is damaged"),
    "too many pixels": (bomb(), 413, "The image is 6000x5000 pixels"),
    "too large": (b"\x89PNG" + bytes(webapp.MAX_UPLOAD_MB * 1024 * 1024), 413, "larger than 10 MB"),
}


def assert_refused(response, html, status, message):
    assert response.status_code == status, html
    assert message in shown(html, "error") or message in html
    assert "Traceback" not in html and 'File "' not in html
    assert 'id="result"' not in html


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_refused_with_a_message(client, outputs, case):
    data, status, message = BAD_UPLOADS[case]
    response, html = post(client, ids(outputs)["models/cancernet.keras"], data)
    assert_refused(response, html, status, message)
    if status != 413:  # the page keeps the form, the chosen model still selected
        assert re.search(rf'value="{ids(outputs)["models/cancernet.keras"]}" selected', html)


@pytest.mark.parametrize("model_id", ["0" * 12, "../models/cancernet.keras", ""])
def test_unknown_model_id_is_refused(client, model_id):
    response, html = post(client, model_id, png_bytes())
    assert_refused(response, html, 400, "Unknown model")


def test_model_that_does_not_load_is_named(tmp_path):
    root = tmp_path / "outputs"
    (root / "models").mkdir(parents=True)
    (root / "models" / "broken.keras").write_bytes(b"PK\x03\x04 not really a zip")
    (root / "models" / "broken.json").write_text(json.dumps({"model": "cancernet"}))
    client = webapp.create_app(root).test_client()
    response, html = post(client, webapp.discover_models(root)[0].id, png_bytes())
    assert_refused(response, html, 422, "model file models/broken.keras does not load")


def test_unknown_page_is_a_page_not_a_traceback(client):
    response = client.get("/nowhere")
    assert response.status_code == 404 and 'id="error"' in response.get_data(as_text=True)


# --- side effects ---------------------------------------------------------------------

def listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in Path(folder).rglob("*"))


def test_requests_write_nothing_and_reuse_the_loaded_model(client, outputs, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = listing(outputs)
    webapp.cached_model.cache_clear()
    model_id = ids(outputs)["models/cancernet.keras"]
    for data in (png_bytes(), png_bytes(fmt="JPEG"), None, b"", image_bytes("GIF"), png_bytes(seed=2)):
        post(client, model_id, data)
    client.get("/")
    assert listing(outputs) == before
    assert os.listdir(cwd) == []
    assert webapp.cached_model.cache_info().currsize == 1  # loaded once for the three valid uploads


def test_the_cache_keeps_the_last_few_models(outputs, tmp_path):
    root = tmp_path / "outputs"
    for i in range(webapp.CACHE_SIZE + 1):
        (root / str(i)).mkdir(parents=True)
        shutil.copy(outputs / "models" / "cancernet.keras", root / str(i) / "m.keras")
        (root / str(i) / "m.json").write_text("{}")
    webapp.cached_model.cache_clear()
    entries = webapp.discover_models(root)
    loaded = [webapp.load_model(e) for e in entries]
    assert webapp.cached_model.cache_info().currsize == webapp.CACHE_SIZE
    assert webapp.load_model(entries[-1]) is loaded[-1]
    assert webapp.load_model(entries[0]) is not loaded[0]  # evicted, loaded again


def tiny_model(units, activation):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Dense(units, activation=activation)(x)
    return keras.Model(inputs, x, name="tiny")


def test_models_grad_cam_cannot_explain(tmp_path):
    """One sigmoid unit and no convolution: the probabilities, and why there is no map;
    three classes: refused."""
    root = tmp_path / "outputs"
    root.mkdir()
    keras.utils.set_random_seed(0)
    for name, units, activation in (("sigmoid", 1, "sigmoid"), ("three", 3, "softmax")):
        tiny_model(units, activation).save(root / f"{name}.keras")
        (root / f"{name}.json").write_text(json.dumps({"task": "thyroid"}))  # thyroid: no padding
    client = webapp.create_app(root).test_client()
    found = {m.rel: m for m in webapp.discover_models(root)}
    data = png_bytes(size=(8, 8))
    response, html = post(client, found["sigmoid.keras"].id, data)
    assert response.status_code == 200, html
    model = keras.models.load_model(root / "sigmoid.keras")
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((8, 8)), "float32")
    p1 = float(model.predict(pixels[None], verbose=0)[0, 0])
    assert 0.01 < p1 < 0.99 and shown(html, "prob-1") == f"{p1:.4f}"
    assert "No Grad-CAM for this model: class_index must be an int in [0, 1)" in html
    assert 'id="overlay"' not in html
    response, html = post(client, found["three.keras"].id, data)
    assert_refused(response, html, 422, "model &#39;tiny&#39; has 3 outputs; this app shows two-class models")


def test_an_upload_from_another_site_is_refused(client, outputs):
    form = {"model": ids(outputs)["models/cancernet.keras"], "image": (io.BytesIO(png_bytes()), "p.png")}
    response = client.post("/", data=form, content_type="multipart/form-data",
                           headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert "Uploads from another site (https://evil.example) are refused" in response.get_data(as_text=True)
    form["image"] = (io.BytesIO(png_bytes()), "p.png")
    same = client.post("/", data=form, content_type="multipart/form-data", headers={"Origin": "http://localhost"})
    assert same.status_code == 200


def test_uploads_are_decoded_two_at_a_time(outputs, monkeypatch):
    import time

    decoding, most = [0], [0]
    guard = threading.Lock()
    real = webapp.read_upload

    def slow_read(data):
        with guard:
            decoding[0] += 1
            most[0] = max(most[0], decoding[0])
        time.sleep(0.3)
        with guard:
            decoding[0] -= 1
        return real(data)

    monkeypatch.setattr(webapp, "read_upload", slow_read)
    app = webapp.create_app(outputs)
    model = ids(outputs)["models/cancernet.keras"]
    statuses = []

    def one():
        response, _ = post(app.test_client(), model, png_bytes())
        statuses.append(response.status_code)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 6 and most[0] == 2


def test_an_upload_too_large_once_decoded_is_refused_before_decoding(client, outputs, monkeypatch):
    import tensorflow as tf

    frame = tf.io.encode_png(np.zeros((300, 400, 4), np.uint16)).numpy()  # 16-bit RGBA: 960,000 bytes decoded
    assert webapp.decoded_bytes(Image.open(io.BytesIO(frame))) == 300 * 400 * 4 * 2
    assert webapp.decoded_bytes(Image.open(io.BytesIO(png_bytes()))) == 50 * 50 * 3
    monkeypatch.setattr(webapp, "MAX_DECODED_MB", 0.5)
    response, html = post(client, ids(outputs)["models/cancernet.keras"], frame, "big.png")
    assert response.status_code == 413
    assert "would take 1 MB once decoded (400x300, 4 channels of 2 byte(s))" in html
