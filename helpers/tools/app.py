"""``make app``: a local web page where one uploads an image, picks a saved model (``discover_models``)
and sees its class probabilities and a Grad-CAM overlay. The upload is read into memory and the
pictures go back inside the page as data: URIs, so nothing is written to disk.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import io
import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from flask import Flask, render_template, request
from PIL import Image, UnidentifiedImageError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import config

MAX_UPLOAD_MB = 10
# A small PNG can declare a huge canvas (a decompression bomb): the header's size
# is checked before any pixel is decoded. 25 MP is far above any ultrasound frame.
MAX_PIXELS = 25_000_000
# Bytes an upload may take once decoded (width x height x channels x bytes per sample): a
# 25-megapixel 8-bit RGB photo (75 MB) passes, the same frame as 16-bit RGBA (200 MB) does not.
MAX_DECODED_MB = 100
# Uploads decoded at once: a 25-megapixel 16-bit RGBA PNG takes ~400 MB while it decodes, so a
# burst of requests waits here instead of each holding its own copy in memory.
DECODES = threading.BoundedSemaphore(2)
FORMATS = {"PNG", "JPEG", "MPO"}  # what PIL finds in the bytes; MPO is the JPEG of many phone cameras
# Folders that hold no model to offer: keras-tuner trials, packed data, Keras'
# BackupAndRestore state, notebook autosaves.
SKIP_DIRS = {"tuner", "cache", "backup", "__pycache__"}
DEFAULT_CLASSES = {"idc": ["no IDC", "IDC"], "thyroid": ["benign", "malignant"]}
CACHE_SIZE = 3
# A Keras model is not meant to be used by several request threads at once.
MODEL_LOCK = threading.RLock()


class AppError(HTTPException):
    """A problem the user can fix, shown on the page with its HTTP status."""

    def __init__(self, description: str, code: int = 400):
        super().__init__(description)
        self.code = code


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "no message"


# --- which models there are ----------------------------------------------------

@dataclass(frozen=True)
class SavedModel:
    path: Path
    rel: str  # path relative to the outputs folder, for people
    meta: dict = field(default_factory=dict, hash=False, compare=False)
    source: str = "sidecar"  # "sidecar" (a .keras with its .json) or "train.json" (a run's best checkpoint)
    problem: str = ""  # e.g. an unreadable sidecar: listed, but said

    @property
    def id(self) -> str:
        """What the form submits: a hash of the relative path, never the path."""
        return hashlib.sha1(self.rel.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        # Checkpoints are named <model>-epochNN-<metric>.keras (train.make_callbacks).
        return str(self.meta.get("model") or self.path.stem.split("-epoch")[0])

    @property
    def task(self) -> str:
        return str(self.meta.get("task") or "idc")

    @property
    def label(self) -> str:
        extras = [x for x in ("best checkpoint of its run" if self.source == "train.json" else "",
                              "generated demo data" if self.meta.get("generated") else "", self.problem) if x]
        return f"{self.rel} — {self.name}, {self.task}" + (f" ({', '.join(extras)})" if extras else "")


def _walk(root: Path, pattern: str) -> list[Path]:
    return sorted(path for path in root.rglob(pattern)
                  if not any(part in SKIP_DIRS or part.startswith(".") for part in path.relative_to(root).parts))


def _read_json(path: Path) -> tuple[dict, str]:
    """(the JSON object at ``path``, "") or ({}, what is wrong with it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, f"{path.name} unreadable: {type(exc).__name__}"
    return (data, "") if isinstance(data, dict) else ({}, f"{path.name} is not a JSON object")


def _checkpoint(train_json: Path, named: str, root: Path) -> Path | None:
    """The file a run's ``best_checkpoint`` names, if it exists inside ``root``. train.fit writes the
    path as given (often relative to the project root, "outputs/runs/..."); a moved outputs folder
    still has the file in the run's own checkpoints folder, so that is tried as well."""
    named = Path(named)
    candidates = [named] if named.is_absolute() else [root.parent / named, Path.cwd() / named]
    for candidate in (*candidates, train_json.parent / "checkpoints" / named.name):
        resolved = candidate.resolve()
        if resolved.is_file() and resolved.suffix == ".keras" and resolved.is_relative_to(root):
            return resolved
    return None


def discover_models(outputs_dir) -> list[SavedModel]:
    """The models saved under ``outputs_dir``, sorted by relative path: (a) every ``*.keras`` with a
    sidecar JSON of the same stem; (b) the ``best_checkpoint`` of every ``runs/**/train.json`` whose
    file exists, unless a model of (a) sits in the run's folder or the one above it: that is the same
    best epoch, saved with its sidecar (``study`` saves ``<run>/best.keras`` and ``best.json`` beside its
    train.json, ``helpers train`` ``<out>/model.keras`` and ``model.json`` above ``<out>/run0/train.json``)."""
    root = Path(outputs_dir).resolve()
    found = {}

    def add(path: Path, source: str):
        sidecar = path.with_suffix(".json")
        meta, problem = _read_json(sidecar) if sidecar.is_file() else ({}, "")
        found[path] = SavedModel(path, path.relative_to(root).as_posix(), meta, source, problem)

    for path in _walk(root, "*.keras"):
        if path.with_suffix(".json").is_file():
            add(path, "sidecar")
    with_sidecar = {path.parent for path in found}
    for train_json in _walk(root / "runs", "train.json"):
        if with_sidecar & {train_json.parent, train_json.parent.parent}:
            continue
        best = _read_json(train_json)[0].get("best_checkpoint")
        path = _checkpoint(train_json, best, root) if isinstance(best, str) and best else None
        if path is not None and path not in found:
            add(path, "train.json")
    return sorted(found.values(), key=lambda m: m.rel)


@functools.lru_cache(maxsize=CACHE_SIZE)
def cached_model(path: Path, rel: str, mtime_ns: int, size: int):
    """The Keras model at ``path``; the last few stay loaded, keyed by the file's modification time
    and size (a retrained file is loaded again)."""
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # a corrupt or foreign file: any loader error
        raise AppError(f"model file {rel} does not load: {type(exc).__name__}: {_first_line(exc)}", 422) from exc


def load_model(entry: SavedModel):
    stat = entry.path.stat()
    return cached_model(entry.path, entry.rel, stat.st_mtime_ns, stat.st_size)


# --- the upload and the prediction ---------------------------------------------------

def decoded_bytes(image: Image.Image) -> int:
    """Width x height x channels x bytes per sample of an opened, not yet decoded image (PIL
    names a 16-bit layout in its decoder's raw mode, e.g. ``RGBA;16B``)."""
    raw = " ".join(str(tile.args) for tile in getattr(image, "tile", []) or [])
    depth = 2 if "16" in raw or image.mode.startswith("I;16") else 1
    return image.width * image.height * len(image.getbands()) * depth


def read_upload(data: bytes) -> Image.Image:
    """The uploaded bytes as an RGB PIL image, or an AppError that says what is wrong. The format
    is what PIL finds in the bytes, whatever the file is called; size and decoded bytes are
    checked from the header, before any pixel is decoded."""
    if not data:
        raise AppError("The file is empty: choose a PNG or JPEG image.")
    kind = "image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            kind, (width, height), bands = image.format, image.size, len(image.getbands())
            if image.format not in FORMATS:
                raise AppError(f"{image.format} images are not supported: upload a PNG or JPEG.", 415)
            if width * height > MAX_PIXELS:
                raise AppError(f"The image is {width}x{height} pixels, more than the "
                               f"{MAX_PIXELS // 1_000_000} million this app accepts.", 413)
            if (decoded := decoded_bytes(image)) > MAX_DECODED_MB * 1_000_000:
                raise AppError(f"The image would take {decoded / 1e6:.0f} MB once decoded ({width}x{height}, {bands} "
                               f"channels of {decoded // (width * height * bands)} byte(s)), more than the "
                               f"{MAX_DECODED_MB} MB this app accepts.", 413)
            image.load()
    except UnidentifiedImageError:
        raise AppError("That file is not an image PIL can read: upload a PNG or JPEG.", 415) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise AppError(f"The image has more than {MAX_PIXELS // 1_000_000} million pixels.", 413) from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or damaged data
        raise AppError(f"The {kind} file is damaged and does not decode ({_first_line(exc)}).", 422) from None
    from ..data import pipeline

    try:  # as training decodes it (alpha dropped, 16-bit scaled): one file, one answer
        return Image.fromarray(pipeline.to_rgb(image))
    except (OSError, ValueError) as exc:
        raise AppError(f"The image's mode {image.mode} cannot be turned into RGB ({_first_line(exc)}).", 422) from None


def png_data_uri(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _number(meta: dict, key: str, default: float) -> float:
    try:
        return float(meta.get(key, default))
    except (TypeError, ValueError):
        return default


def predict(model, image: Image.Image, meta: dict) -> dict:
    """Both class probabilities, the decision at the threshold and the Grad-CAM overlay."""
    from .. import cam, models
    from ..data import pipeline

    name, task = str(meta.get("model") or model.name), str(meta.get("task") or "idc")
    classes = meta.get("class_names")
    if not (isinstance(classes, list) and len(classes) == 2):
        classes = DEFAULT_CLASSES.get(task, DEFAULT_CLASSES["idc"])
    threshold = _number(meta, "threshold", 0.5)
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4 or shape[3] not in (3, None):
        raise AppError(f"model {model.name!r} does not take RGB images (its input is {shape}).", 422)
    # the model's own input size; the sidecar's image_size where it has none
    height, width = (int(s) if s else int(_number(meta, "image_size", 50)) for s in shape[1:3])
    if task == "idc" and image.width <= pipeline.PATCH and image.height <= pipeline.PATCH:
        # A border patch smaller than 50x50: padded with white, as in training.
        image = Image.fromarray(pipeline.pad_patch(np.asarray(image)))
    seen = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    # a registry model's pipeline preprocessing; others (the thyroid models) carry theirs inside
    x = pipeline.to_model_input(seen[None], height, models.preprocess_for(name) if name in models.MODELS else None)
    out = np.asarray(model(x, training=False), dtype="float64").reshape(-1)
    if out.size not in (1, 2):  # two softmax units or one sigmoid unit
        raise AppError(f"model {name!r} has {out.size} outputs; this app shows two-class models.", 422)
    p1 = out[-1]
    result = {"name": name, "task": task, "classes": classes, "threshold": threshold,
              "proba": [1.0 - float(p1), float(p1)], "size": f"{width}x{height}",
              "predicted": classes[int(p1 >= threshold)], "input_uri": png_data_uri(seen),
              "overlay_uri": None, "layer": None, "cam_problem": None}
    try:
        maps = cam.grad_cam(model, x, class_index=1)
    except ValueError as exc:  # e.g. a model with no convolution, or a single sigmoid output
        result["cam_problem"] = _first_line(exc)
    else:
        result["overlay_uri"] = png_data_uri(cam.overlay(seen, maps.maps[0]))
        result["layer"] = str(maps.layer)
    return result


# --- the web app -------------------------------------------------------------------

def create_app(outputs_dir=None) -> Flask:
    """The Flask app over the models in ``outputs_dir`` (default: outputs/)."""
    outputs = Path(outputs_dir or config.ROOT / "outputs").expanduser()
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_UPLOAD_MB * 1024 * 1024, OUTPUTS_DIR=outputs)

    def page(status=200, selected=None, **context):
        found = discover_models(outputs)
        return render_template("app.html", models=found, outputs=outputs, max_mb=MAX_UPLOAD_MB,
                               selected=selected or (found[0].id if found else None), **context), status

    @app.get("/")
    def index():
        return page()

    @app.before_request
    def same_origin_only():
        # A page on another site must not post images to this local app through the user's browser.
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin and urlsplit(origin).netloc != request.host:
            raise AppError(f"Uploads from another site ({origin}) are refused: open this app's own page.", 403)

    @app.post("/")
    def upload():
        found = {m.id: m for m in discover_models(outputs)}
        chosen = request.form.get("model", "")
        if not found:
            raise AppError("No model is saved yet, so there is nothing to predict with.")
        if chosen not in found:
            raise AppError("Unknown model: choose one from the list (reload the page if "
                           "models were added or removed).")
        upload = request.files.get("image")
        if upload is None or not upload.filename:
            raise AppError("No file was chosen: pick a PNG or JPEG image to upload.")
        with DECODES:
            image = read_upload(upload.read())
        with MODEL_LOCK:
            result = predict(load_model(found[chosen]), image, found[chosen].meta)
        return page(result=result, entry=found[chosen], selected=chosen)

    @app.errorhandler(HTTPException)
    def refused(exc):
        if isinstance(exc, RequestEntityTooLarge):  # the body is over MAX_CONTENT_LENGTH: its form is unread
            return page(413, error=f"The file is larger than {MAX_UPLOAD_MB} MB: upload a smaller image.")
        return page(exc.code, error=exc.description, selected=request.form.get("model"))

    @app.errorhandler(Exception)
    def unexpected(exc):
        app.logger.exception("request failed")  # the traceback goes to the terminal, not to the page
        return page(500, error=f"Something went wrong ({type(exc).__name__}); the terminal "
                               "running the app shows the details.")

    return app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.tools.app", description=__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--outputs", help="folder with the saved models (default: outputs/)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ..notebook import import_tensorflow_quietly

    import_tensorflow_quietly()  # now, not in the first request
    app = create_app(args.outputs)
    found = discover_models(app.config["OUTPUTS_DIR"])
    print(f"{len(found)} model(s) in {app.config['OUTPUTS_DIR']}; open http://{args.host}:{args.port}/")
    app.run(host=args.host, port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
