"""The BreakHis track (notebook 12, and notebook 11's Bayesian search): pretrain a model on BreakHis,
saved for fine-tuning on IDC, and compare the fine-tuned arms with the seed project's figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import runs
from ..config import is_generated
from ..data.index import data_root, files
from ..data.splits import SPLITS
from ..imagesets import split_by_patient_label
from ..reference import ORIGINAL_FINE_TUNE_AT
from .index import build_index, to_patches


@dataclass
class Pretrained:
    """A model pretrained on BreakHis (benign 0 / malignant 1), saved, with its scores on the patches
    of validation and test patients (the threshold chosen on validation)."""

    path: Path  # the saved model (.keras): models.build_model(name, weights=path) starts from it
    model: str
    trained: bool  # False: read back from an earlier run with the same data and settings
    data: str  # the BreakHis folder
    generated: bool
    split_note: str
    patches: dict  # per split
    threshold: float
    val: dict
    test: dict | None
    run_dir: str
    settings: dict

    @property
    def history(self) -> pd.DataFrame:
        from ..train import read_history

        return read_history(self.run_dir)

    def scores_table(self) -> pd.DataFrame:
        """Validation and test scores side by side (positives: malignant patches)."""
        rows = {"validation": self.val, **({"test": self.test} if self.test else {})}
        return pd.DataFrame(rows).T.drop(columns=["threshold", "tn", "fp", "fn", "tp"]).astype(float).round(3)

    def as_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def pretrain(cfg, breakhis_dir, model_name: str = "cancernet", *, epochs: int | None = None,
             mode: str = "tiles", tiles_per_image: int = 4, weights=None, out=None) -> Pretrained:
    """Train ``model_name`` to tell benign from malignant BreakHis patches, or read it back when trained
    before on the same files with the same settings. Split by patient (``cfg.seed``), cut into 50x50
    inputs (:func:`to_patches`), resized in the pipeline as the IDC patches are; ``train.fit`` with class
    weights keeps the best epoch by validation AUC and resumes an interrupted run. ``weights``: None, or
    "imagenet" for a backbone (then fully trainable). The model goes to ``out`` (default ``<output_dir>/
    models/breakhis_<model>_<profile>_<digest>.keras``), written atomically, its scores in a .json beside it."""
    from .. import evaluate, models, train
    from ..data import pipeline
    from ..io import atomic_path

    root = data_root(breakhis_dir, "BreakHis directory", missing=FileNotFoundError)
    size = models.input_size(model_name)
    # optimizer and learning_rate are fixed; they stay in the settings, whose digest names saved models
    settings = {"model": model_name, "epochs": int(epochs or cfg.epochs), "batch_size": cfg.batch_size,
                "seed": cfg.seed, "mode": mode, "tiles_per_image": tiles_per_image if mode == "tiles" else None,
                "image_size": size, "weights": None if weights is None else str(weights), "optimizer": "adam",
                "learning_rate": None}
    # every PNG's path and size: cheap to read, and it changes with the data
    listing = runs.fingerprint([f"{path.relative_to(root)}|{path.stat().st_size}" for path, _ in files(root)
                                if path.suffix.lower() == ".png"], length=40)
    digest = runs.fingerprint({**settings, "data": str(root.resolve()), "files": listing}, length=10)
    stem = f"breakhis_{model_name}_{cfg.profile}_{digest}"
    path = Path(out) if out else Path(cfg.output_dir) / "models" / f"{stem}.keras"
    sidecar = path.with_suffix(".json")
    saved = runs.read_record(sidecar, digest) if path.is_file() else None
    if saved is not None:
        return Pretrained(**{**saved, "path": path, "trained": False})

    split = split_by_patient_label(build_index(root)[0], seed=cfg.seed)
    if empty := [s for s in SPLITS[:2] if not (split["split"] == s).any()]:
        raise ValueError(f"{root}: no patient left for the {' and '.join(empty)} split "
                         f"({split['patient'].nunique()} patients; pretraining needs 3 per class)")
    patches = to_patches(split, mode=mode, tiles_per_image=tiles_per_image, seed=cfg.seed)
    where = split.loc[patches.source, "split"].to_numpy()

    def dataset(name, shuffle=False):
        return pipeline.make_dataset(images=patches.images[where == name], labels=patches.labels[where == name],
                                     batch_size=cfg.batch_size, image_size=size, one_hot=True, shuffle=shuffle,
                                     seed=cfg.seed, preprocess=models.preprocess_for(model_name))

    counts = {name: int((where == name).sum()) for name in SPLITS if (where == name).any()}
    model = models.build_model(model_name, image_size=size, weights=weights,
                               fine_tune_at=None if weights is None else 0, seed=cfg.seed)
    run_dir = Path(cfg.output_dir) / "runs" / stem
    val, training = dataset("val"), train.Training(settings["optimizer"], settings["learning_rate"])
    best = train.fit(model, dataset("train", shuffle=True), val, run_dir, training, epochs=settings["epochs"],
                     seed=cfg.seed, name=f"breakhis_{model_name}", train_patches=counts["train"],
                     class_weight=train.class_weights(patches.labels[where == "train"])).best_model(model)
    y_val, p_val = evaluate.predict(best, val)
    threshold = evaluate.choose_threshold(y_val, p_val)
    test = evaluate.scores(*evaluate.predict(best, dataset("test")), threshold) if "test" in counts else None
    with atomic_path(path) as tmp:
        best.save(tmp)
    done = Pretrained(path=path, model=model_name, trained=True, data=str(root), generated=is_generated(root),
                      split_note=f"by patient, 70/15/15, seed {cfg.seed}; {mode}: "
                                 + " / ".join(f"{n} {name}" for name, n in counts.items()) + " patches",
                      patches=counts, threshold=threshold, val=evaluate.scores(y_val, p_val, threshold),
                      test=test, run_dir=str(run_dir), settings=settings)
    runs.write_record(sidecar, digest, {k: v for k, v in done.as_dict().items() if k not in ("path", "trained")})
    return done


def fine_tune_arms(model_name: str, pretrained_path, fine_tune_at: int | None = None,
                   imagenet: bool = False) -> dict:
    """The arms of notebook 12's study, name -> keywords of ``models.build_model``, differing only in
    where the weights start: "scratch" (random), "breakhis" (``pretrained_path``, the first
    ``fine_tune_at`` layers frozen; None: the seed's value for the model) and, with ``imagenet``,
    "imagenet" (a backbone's ImageNet weights, frozen alike)."""
    from ..models import MODELS

    fine_tune_at = ORIGINAL_FINE_TUNE_AT.get(model_name) if fine_tune_at is None else fine_tune_at
    if imagenet and not MODELS[model_name].pretrained:
        raise ValueError(f"{model_name!r} has no ImageNet weights: imagenet=True needs a backbone "
                         f"({', '.join(n for n, spec in MODELS.items() if spec.pretrained)})")
    return {"scratch": {}, "breakhis": {"weights": str(pretrained_path), "fine_tune_at": fine_tune_at},
            **({"imagenet": {"weights": "imagenet", "fine_tune_at": fine_tune_at}} if imagenet else {})}


def beside_original(model_name: str, runs: pd.DataFrame, cfg, split_note: str) -> pd.DataFrame:
    """The seed project's published figures for ``model_name`` (each with its split) above this study's
    runs, one row per variant (mean over seeds), in the same columns."""
    from ..reference import original_rows

    original = original_rows(model_name).assign(note=lambda t: t["note"].where(t["note"] != "", "seed project"))
    ours = [{"model": part["model"].iloc[0], "setting": f"{variant} ({cfg.profile}, {cfg.epochs} epochs, "
             f"{len(part)} seed{'s' * (len(part) > 1)})", "train": None, "val": None,
             "test": round(part["accuracy"].mean(), 3) if on == "test" else None,
             "f1": round(part["f1"].mean(), 3), "split": f"{on} split, {split_note}", "note": cfg.data_label}
            for variant, part in runs.groupby("variant", sort=False) for on in [part["scored_on"].iloc[0]]]
    return pd.concat([original, pd.DataFrame(ours)], ignore_index=True)


def verdict(summary: pd.DataFrame, source: str, arm: str = "breakhis") -> str:
    """One sentence: does ``arm`` beat "scratch" in a study summary (``Study.summary()``)? Judged on
    validation F1 (test F1 shown beside); a difference below 0.02 or two standard deviations over
    seeds counts as none."""
    for name in ("scratch", arm):
        if name not in summary.index:
            raise ValueError(f"no variant {name!r} in the summary; it has {list(summary.index)}")
    a, b = summary.loc[arm], summary.loc["scratch"]
    diff = float(a["val_f1"] - b["val_f1"])
    margin = max(0.02, 2 * max(float(a.get("val_f1_sd", 0) or 0), float(b.get("val_f1_sd", 0) or 0)))
    word = "helps" if diff > margin else "hurts" if diff < -margin else "makes no clear difference"
    test = f"; test F1 {a['f1']:.3f} against {b['f1']:.3f}" if "f1" in summary and pd.notna(a["f1"]) else ""
    return (f"Starting from '{arm}' rather than 'scratch' {word} here: validation F1 {a['val_f1']:.3f} "
            f"against {b['val_f1']:.3f}{test} (a difference within {margin:.3f} counts as none; {source}).")
