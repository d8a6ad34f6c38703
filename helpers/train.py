"""One training loop for every notebook: optimizer by name, class weights, best-epoch checkpoints, early
stopping, a CSV history, and resumption of an interrupted run. Labels are one-hot (the pipeline's
``one_hot=True``) so that label smoothing works with the same loss; column 1 of the softmax is IDC."""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import time
import weakref
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from . import runs
from .io import write_text

# Learning rates are Keras' defaults except adagrad/adadelta, whose defaults
# (0.001) barely move a CNN in the few epochs of a teaching run.
OPTIMIZERS = {  # name: (Keras class, default learning rate)
    "adagrad": ("Adagrad", 0.01),
    "sgd": ("SGD", 0.01),  # with momentum 0.9
    "rmsprop": ("RMSprop", 0.001),
    "adam": ("Adam", 0.001),
    "adadelta": ("Adadelta", 1.0),  # the value of the original paper (Zeiler 2012)
}


@dataclass(frozen=True)
class Training:
    """How a model is trained, as a study's arm, a recipe or a notebook sets it (how long comes from the
    profile or the recipe: ``fit``'s ``epochs``)."""

    optimizer: object = "adam"  # a name of OPTIMIZERS, or a Keras optimizer (a recipe's schedule, EMA)
    learning_rate: object = None  # None: the optimizer's default in OPTIMIZERS; or a Keras schedule
    optimizer_options: dict | None = None  # to the optimizer, e.g. {"clipnorm": 1.0}
    label_smoothing: float = 0.0
    monitor: str = "val_auc"  # what picks the best epoch and stops early
    patience: int = 5
    # Training batches that refresh the BatchNorm statistics before each validation; 0: off (notebook 08).
    recalibrate_bn: int = 20
    checkpoint_metrics: tuple | None = None  # in the checkpoints' names; None: the monitored one

    def changes(self) -> dict:
        """The settings that differ from the defaults: how a run's fingerprint names them."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}


def make_optimizer(name: str, learning_rate: float | None = None, **options):
    """A Keras optimizer of OPTIMIZERS by name (sgd with momentum 0.9); ``learning_rate`` may be a Keras
    schedule; ``options`` go to the optimizer, e.g. ``clipnorm=1.0``."""
    import keras

    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    cls, default = OPTIMIZERS[key]
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        lr = learning_rate
    else:
        lr = default if learning_rate is None else float(learning_rate)
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {learning_rate}")
    momentum = {"momentum": 0.9} if key == "sgd" else {}
    return getattr(keras.optimizers, cls)(learning_rate=lr, **momentum, **options)


def class_weights(labels) -> dict[int, float]:
    """Weights that make both classes count equally in the loss (n / (2 * n_class))."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels).astype(int)
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"the training split holds only class {present.tolist()}: cannot weight two classes")
    return dict(enumerate(map(float, compute_class_weight("balanced", classes=np.array([0, 1]), y=labels))))


def run_metrics() -> list:
    """The metrics every run logs; precision, recall and AUC are the IDC class's."""
    import keras

    return [keras.metrics.CategoricalAccuracy(name="accuracy"),
            # multi_label: the mean of the two columns' AUCs, each equal to the IDC class's
            # ROC-AUC. The default pools both one-hot columns into one ranking, which
            # punishes a shifted calibration (class weights): 0.73 where sklearn gives 0.88.
            keras.metrics.AUC(name="auc", multi_label=True, num_labels=2),
            keras.metrics.Precision(class_id=1, name="precision"),
            keras.metrics.Recall(class_id=1, name="recall")]


def compile_model(model, optimizer="adam", learning_rate=None, label_smoothing: float = 0.0,
                  optimizer_options: dict | None = None, xla: bool | None = None):
    """Compile with categorical cross-entropy and ``run_metrics``; ``xla`` None: ``hardware.current().xla``.

    Under the model's distribution strategy, so that the optimizer's slots are mirrored like its weights;
    built here, since built lazily in the first train step they make tf.function trace it twice
    (ResNet50 at 32 px: the first epoch 34 s -> 15 s).
    """
    import keras

    from . import hardware

    with model.distribute_strategy.scope():
        model.compile(
            optimizer=(make_optimizer(optimizer, learning_rate, **(optimizer_options or {}))
                       if isinstance(optimizer, str) else optimizer),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
            metrics=run_metrics(),
            jit_compile=hardware.current().xla if xla is None else bool(xla),
        )
        model.optimizer.build(model.trainable_variables)
    return model


def _f1_callback():
    import keras

    class F1FromPrecisionRecall(keras.callbacks.Callback):
        """Adds f1 / val_f1 (IDC class, threshold 0.5) to the logs, before checkpoints read them."""

        def on_epoch_end(self, epoch, logs=None):
            for prefix in ("", "val_") if logs is not None else ():
                p, r = logs.get(f"{prefix}precision"), logs.get(f"{prefix}recall")
                if p is not None and r is not None:
                    logs[f"{prefix}f1"] = 0.0 if p + r == 0 else 2 * p * r / (p + r)

    return F1FromPrecisionRecall()


def batchnorm_layers(model) -> list:
    """Every BatchNormalization layer that learns its statistics, nested models' included (frozen ones,
    a pretrained backbone's, run in inference mode and keep theirs)."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += batchnorm_layers(layer) if layer.trainable else []
        elif isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found.append(layer)
    return found


def recalibrate_batchnorm(model, dataset, batches: int = 20) -> int:
    """Set the moving mean and variance of every learning BatchNormalization layer to their average over
    ``batches`` training batches ("precise BN"); return the count.

    They start at mean 0 / variance 1 and follow the batches with momentum 0.9: after the ~20 steps of a
    short run they are still far from the real ones (measured: variance 0.093 against a real 0.0049), so
    predict() squeezes every output to nearly one probability and the validation loss can blow up while
    training accuracy looks fine.
    """
    layers = batchnorm_layers(model)
    if not layers or batches < 1:
        return 0
    saved = [layer.momentum for layer in layers]
    sums = [[0.0, 0.0] for _ in layers]
    seen = 0
    try:
        for layer in layers:  # momentum 0: each call leaves exactly that batch's statistics
            layer.momentum = 0.0
        step = _batch_statistics(model, layers)
        for seen, (x, _) in enumerate(dataset.take(batches), 1):
            for total, (mean, variance) in zip(sums, step(x)):
                total[0] += mean.numpy()
                total[1] += variance.numpy()
        for (mean, variance), layer in zip(sums, layers if seen else []):
            layer.moving_mean.assign(mean / seen)
            layer.moving_variance.assign(variance / seen)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return seen


_STEPS = weakref.WeakKeyDictionary()


def _batch_statistics(model, layers):
    """A graph, traced once per model, that runs ``model(x, training=True)`` and returns every layer's
    (moving mean, moving variance): eagerly the pass took 2.3x (ResNet50) to 3.3x (CancerNet) as long.
    The trace keeps the momentum of 0 that recalibrate_batchnorm sets around every call."""
    import tensorflow as tf

    key = tuple(map(id, layers))  # unfreezing a backbone for fine-tuning adds layers: a new trace
    if _STEPS.get(model, (None,))[0] != key:
        ref = weakref.ref(model)  # the cache must not keep the model alive

        def step(x):
            ref()(x, training=True)
            return [(tf.identity(layer.moving_mean.value), tf.identity(layer.moving_variance.value))
                    for layer in layers]

        _STEPS[model] = key, tf.function(step, reduce_retracing=True)
    return _STEPS[model][1]


def _recalibrate_callback(dataset, batches):
    import keras

    class RecalibrateBatchNorm(keras.callbacks.Callback):
        """Before each validation: fresh BatchNorm statistics (see recalibrate_batchnorm)."""

        def on_test_begin(self, logs=None):
            recalibrate_batchnorm(self.model, dataset, batches)

    return RecalibrateBatchNorm()


def _seed_callback():
    """At each epoch's start, the counters of the model's random layers (Dropout) set from the epoch: the
    weights backup leaves them out, and a resumed run must draw what the whole run drew."""
    import keras

    class EpochSeeds(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            for state in [v for v in self.model.variables if "seed_generator_state" in v.path]:
                state.assign(np.array([int(state.numpy()[0]), epoch * 2**24], dtype=state.dtype))

    return EpochSeeds()


def make_callbacks(run_dir, name: str, training: Training, extra=(), resume: dict | None = None) -> list:
    """F1, best-epoch checkpoint (e.g. ``vgg16-epoch03-val_loss0.4127-val_accuracy0.8100.keras`` with
    ``training.checkpoint_metrics``), early stopping, CSV history, backup for resumption. ``resume``
    (:func:`resume_state`) carries the best value so far and the epochs waited since, so that a
    resumed run keeps and stops on what the whole run saw."""
    import keras

    checkpoints, monitor, resume = Path(run_dir, "checkpoints"), training.monitor, resume or {}
    shown = "-".join(f"{m}{{{m}:.4f}}" for m in (training.checkpoint_metrics or (monitor,)))
    checkpoints.mkdir(parents=True, exist_ok=True)
    mode = "min" if "loss" in monitor else "max"
    return [
        _f1_callback(),
        keras.callbacks.ModelCheckpoint(str(checkpoints / f"{name}-epoch{{epoch:02d}}-{shown}.keras"), monitor=monitor,
                                        mode=mode, save_best_only=True, initial_value_threshold=resume.get("best")),
        _early_stopping(monitor, mode, training.patience, resume.get("best"), resume.get("wait", 0)),
        keras.callbacks.CSVLogger(str(Path(run_dir, "history.csv")), append=True),
        _backup_callback(Path(run_dir, "backup")),  # a new fit() in the same run_dir resumes from it
        keras.callbacks.TerminateOnNaN(),
        *extra,
    ]


BACKUP_WEIGHTS, BACKUP_STATE = "latest.weights.h5", "training_metadata.json"  # Keras' names


def _backup_callback(backup_dir):
    """Keras' BackupAndRestore writing each file to a temporary name renamed into place: a kill at any
    moment leaves the last finished epoch's backup whole."""
    import keras

    class AtomicBackup(keras.callbacks.BackupAndRestore):
        def _save_model(self):
            Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
            partial = Path(self.backup_dir) / "partial.weights.h5"  # Keras wants the .weights.h5 ending
            self.model.save_weights(filepath=str(partial), overwrite=True)
            partial.replace(self._weights_path)
            write_text(self._training_metadata_path,
                       json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))

    # Kept when training ends: fit() deletes it once train.json says the run finished, so a kill leaves one of them.
    return AtomicBackup(str(backup_dir), delete_checkpoint=False)


def _early_stopping(monitor: str, mode: str, patience: int, best, wait: int):
    """EarlyStopping that starts from a resumed run's best value and patience spent."""
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self.best, self.wait = best, wait

    return ResumableEarlyStopping(monitor=monitor, mode=mode, patience=patience)


def readable_backup(backup_dir) -> int | None:
    """The epochs a backup holds, if its weights open and its state parses; else None."""
    import h5py

    try:
        epochs = int(json.loads(Path(backup_dir, BACKUP_STATE).read_text())["epoch"])
        h5py.File(Path(backup_dir, BACKUP_WEIGHTS), "r").close()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return epochs


def resume_state(run_dir, monitor: str, epochs_done: int) -> dict:
    """Best value of ``monitor`` over the first ``epochs_done`` epochs of the history, and the
    epochs since it (what EarlyStopping had counted when the run stopped)."""
    history = _history_or_empty(run_dir)
    history = history[history["epoch"] < epochs_done]
    if history.empty or monitor not in history:
        return {}
    values = history[monitor].astype(float)
    at = int(values.idxmin() if "loss" in monitor else values.idxmax())
    return {"best": float(values[at]), "wait": int(len(history) - 1 - history.index.get_loc(at)),
            "best_epoch": int(history.loc[at, "epoch"])}


@dataclass
class TrainResult:
    run_dir: str
    best_checkpoint: str | None
    epochs_run: int
    seconds: float
    images_per_s: float
    train_patches: int

    @property
    def history(self) -> pd.DataFrame:
        return read_history(self.run_dir)

    def best_model(self, fallback):
        """The model of the best epoch (its checkpoint), or ``fallback`` when none was written."""
        import keras

        return keras.models.load_model(self.best_checkpoint) if self.best_checkpoint else fallback


def read_history(run_dir) -> pd.DataFrame:
    """The epochs logged in ``run_dir/history.csv`` (one row per epoch, resumed runs included)."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no history at {path}: has this run trained yet?")
    history = pd.read_csv(path)
    # A resumed run logs again from the epoch it restarted at: keep the last row per epoch.
    return history.drop_duplicates("epoch", keep="last").reset_index(drop=True)


def _history_or_empty(run_dir) -> pd.DataFrame:
    try:
        return read_history(run_dir)
    except FileNotFoundError:
        return pd.DataFrame(columns=["epoch"])


def _epoch_of(checkpoint: Path) -> int | None:
    """The epoch in a checkpoint's name; Keras numbers them from 1."""
    match = re.search(r"-epoch(\d+)-", checkpoint.name)
    return int(match.group(1)) if match else None


def best_checkpoint(run_dir, monitor: str = "val_auc") -> Path | None:
    """The checkpoint of the best epoch by ``monitor`` in the history (a resumed run's files are
    not in time order of merit), that opens as a .keras archive; the newest whole one if the
    history names none."""
    import zipfile

    found = [p for p in Path(run_dir, "checkpoints").glob("*.keras") if zipfile.is_zipfile(p)]
    if not found:
        return None
    by_epoch = {_epoch_of(path): path for path in sorted(found, key=lambda p: p.stat().st_mtime)}
    history = _history_or_empty(run_dir)
    if monitor in history:
        ranked = history.sort_values(monitor, ascending="loss" in monitor, kind="stable")
        for epoch in ranked["epoch"]:
            if int(epoch) + 1 in by_epoch:
                return by_epoch[int(epoch) + 1]
    return max(found, key=lambda p: p.stat().st_mtime)


def finished_run(run_dir, key: str, monitor: str = "val_auc") -> TrainResult | None:
    """The result of the run in ``run_dir`` if it finished with settings ``key``, else None."""
    saved = runs.read_record(Path(run_dir) / "train.json", key)
    if saved is None:
        return None
    best = best_checkpoint(run_dir, monitor)
    if saved.get("best_checkpoint") and best is None:  # its checkpoints were deleted: not whole
        return None
    return TrainResult(str(run_dir), str(best) if best else None,
                       *(saved[f] for f in ("epochs_run", "seconds", "images_per_s", "train_patches")))


def fit(model, train_ds, val_ds, run_dir, training: Training, *, epochs: int, seed: int = 42,
        key: str | None = None, name: str | None = None, class_weight=None, train_patches: int | None = None,
        extra_callbacks=(), verbose: int = 2) -> TrainResult:
    """Compile and train ``model`` as ``training`` says for at most ``epochs``, writing to ``run_dir``.

    Run again with the same ``run_dir`` after an interruption, it resumes after the last finished epoch.
    ``key`` names the settings, data included: a run finished in ``run_dir`` with it is read back, a
    backup of another key is not resumed. ``verbose=2``: one line per epoch, as progress bars would bloat
    an executed notebook. An optimizer with ``use_ema=True`` is validated and checkpointed with its
    averaged weights. ``name`` (default: the model's) begins the checkpoints' names; ``train_patches``
    gives the speed in patches per second.
    """
    import keras

    monitor, optimizer = training.monitor, training.optimizer
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    keras.utils.set_random_seed(seed)
    name = name or model.name
    run_dir = Path(run_dir)
    with runs.claimed(run_dir):
        if key is not None:
            finished = finished_run(run_dir, key, monitor)
            if finished is not None:
                print(f"{run_dir}: finished earlier with these settings, read back", file=sys.stderr, flush=True)
                shutil.rmtree(run_dir / "backup", ignore_errors=True)  # a kill may have left it
                return finished
            started = run_dir / "started.json"
            if started.is_file() and runs.read_record(started, key) is None:
                shutil.rmtree(run_dir / "backup", ignore_errors=True)  # another run's state: not resumed
            runs.write_record(started, key, {})
        done = readable_backup(run_dir / "backup")
        if done is None and (run_dir / "backup").exists():
            print(f"warning: the backup in {run_dir / 'backup'} cannot be read; training starts again "
                  "from epoch 1", file=sys.stderr, flush=True)
            shutil.rmtree(run_dir / "backup")
        if done is None:  # a fresh start: an earlier run's history and checkpoints would mix with this one's
            (run_dir / "history.csv").unlink(missing_ok=True)
        for old in (run_dir / "checkpoints").glob("*.keras"):  # resumed: those of epochs the backup lacks
            if done is None or (_epoch_of(old) or 0) > done:
                old.unlink()
        resume = {} if done is None else resume_state(run_dir, monitor, done)
        compile_model(model, optimizer, training.learning_rate, training.label_smoothing, training.optimizer_options)
        # A dataset from pipeline.make_dataset knows its epochs: each keyed on its number, so that a
        # resumed run trains on the batches the uninterrupted one would have.
        keyed = hasattr(train_ds, "epochs")
        batches = train_ds.epochs(done or 0, epochs) if keyed else train_ds
        recalibrate = training.recalibrate_bn  # before every validation, so before every checkpoint
        extra = ([_recalibrate_callback(getattr(train_ds, "calibration", train_ds), recalibrate)]
                 if recalibrate else []) + [_seed_callback()] + list(extra_callbacks)
        callbacks = make_callbacks(run_dir, name, training, extra, resume=resume)
        if getattr(model.optimizer, "use_ema", False):
            # First, so that validation (and the BatchNorm recalibration before it) and the checkpoint see
            # the averaged weights; training steps go on with the raw ones (a resumed run, the averaged).
            callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        start = time.perf_counter()
        history = model.fit(batches, validation_data=val_ds, epochs=epochs, class_weight=class_weight,
                            steps_per_epoch=train_ds.steps if keyed else None,
                            shuffle=False,  # the tf.data pipeline shuffles
                            callbacks=callbacks, verbose=verbose)
        seconds, n = time.perf_counter() - start, train_patches or 0
        best = best_checkpoint(run_dir, monitor)
        result = TrainResult(
            run_dir=str(run_dir), best_checkpoint=str(best) if best else None,
            epochs_run=len(read_history(run_dir)),  # a resumed run's earlier epochs count too
            seconds=round(seconds, 2), train_patches=n,
            images_per_s=round(n * len(history.epoch) / seconds, 1) if n and seconds > 0 else math.nan)
        runs.write_record(run_dir / "train.json", key, {
            **asdict(result), "optimizer": optimizer if isinstance(optimizer, str) else type(optimizer).__name__,
            "learning_rate": training.learning_rate, "epochs": epochs, "monitor": monitor, "seed": seed},
            default=lambda o: o.get_config() if hasattr(o, "get_config") else str(o))  # a schedule
        shutil.rmtree(run_dir / "backup", ignore_errors=True)
        return result
