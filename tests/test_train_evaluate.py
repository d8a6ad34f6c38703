import json
import threading

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from helpers import evaluate, results, train
from helpers.data import source


FAST = train.Training(learning_rate=0.05)  # the tiny model learns in a few epochs


def tiny_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.Dense(4, activation="relu")(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny")


def separable(n=256, seed=0):
    """Bright images are class 1, dark ones class 0: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 8, 8, 3)).astype("float32") + (y * 2.0 - 1)[:, None, None, None]
    return tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, 2))).batch(32), y


@pytest.mark.parametrize("name", sorted(train.OPTIMIZERS))
def test_optimizers_by_name(name):
    opt = train.make_optimizer(name, 0.05)
    assert float(opt.learning_rate) == pytest.approx(0.05)
    if name == "sgd":
        assert opt.momentum == 0.9


def test_bad_optimizer_and_rate_raise():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'.*adadelta"):
        train.make_optimizer("adamw")
    with pytest.raises(ValueError, match="positive"):
        train.make_optimizer("adam", 0)


def test_training_names_only_the_settings_it_changes():
    # What a run's fingerprint holds: a study arm that sets nothing keeps the key it had as fit={}.
    assert train.Training().changes() == {}
    assert train.Training("sgd", 0.01, recalibrate_bn=0).changes() == {
        "optimizer": "sgd", "learning_rate": 0.01, "recalibrate_bn": 0}
    assert train.Training(label_smoothing=0.0, monitor="val_auc").changes() == {}  # the defaults, given


def test_class_weights_balance_the_classes():
    w = train.class_weights([0, 0, 0, 1])
    assert w == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    with pytest.raises(ValueError, match="only class"):
        train.class_weights([1, 1])


def test_fit_learns_and_writes_checkpoint_history_and_summary(tmp_path):
    ds, _ = separable()
    val, y_val = separable(seed=1)
    result = train.fit(tiny_model(), ds, val, tmp_path / "run", FAST, epochs=4, train_patches=256, verbose=0)
    history = result.history
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert {"loss", "val_loss", "val_auc", "f1", "val_f1"} <= set(history.columns)
    assert history["val_accuracy"].iloc[-1] > 0.9
    best = tmp_path / "run" / "checkpoints"
    assert result.best_checkpoint and result.best_checkpoint.endswith(".keras")
    assert "tiny-epoch" in result.best_checkpoint and "val_auc" in result.best_checkpoint
    assert len(list(best.glob("*.keras"))) >= 1
    reloaded = keras.models.load_model(result.best_checkpoint)
    y, p = evaluate.predict(reloaded, val)
    assert (y == y_val).all() and evaluate.scores(y, p)["balanced_accuracy"] > 0.9
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    assert summary["epochs_run"] == 4 and summary["images_per_s"] > 0
    assert not (tmp_path / "run" / "backup").exists(), "the backup is removed after a finished run"


def test_the_logged_auc_is_the_idc_class_roc_auc_even_when_shifted():
    # Class weights shift every probability up; the ranking, and so the ROC-AUC, stays. Keras'
    # default AUC pools both one-hot columns and reads such a shift as worse ranking.
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.25).astype(int)
    p = np.clip(0.6 + 0.25 * (y - 0.5) + 0.15 * rng.standard_normal(2000), 0.01, 0.99)
    auc = next(m for m in train.run_metrics() if m.name == "auc")
    auc.update_state(np.eye(2)[y].astype("float32"), np.stack([1 - p, p], axis=1).astype("float32"))
    assert float(auc.result()) == pytest.approx(roc_auc_score(y, p), abs=2e-3)
    assert roc_auc_score(y, p) > 0.85


def test_the_train_step_is_traced_once(monkeypatch):
    # An optimizer built inside the first trace makes tf.function trace the step twice:
    # minutes per run for the big backbones.
    model = train.compile_model(tiny_model(), "adam")
    assert model.optimizer.built and len(model.optimizer.variables) > 2
    traced = []
    step = model.train_step
    monkeypatch.setattr(model, "train_step", lambda data: traced.append(1) or step(data))
    ds, _ = separable(n=64)
    model.fit(ds, epochs=2, verbose=0)
    assert len(traced) == 1


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    ds, _ = separable()
    val, _ = separable(seed=1)
    assert crash_after_first_epoch(tmp_path, ds, val).exists()
    assert list(train.read_history(tmp_path / "run")["epoch"]) == [0]

    started = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            started.append(epoch)

    result = train.fit(tiny_model(), ds, val, tmp_path / "run", FAST, epochs=3, extra_callbacks=[Record()], verbose=0)
    assert started == [1, 2], "the second fit starts after the epoch that finished"
    assert result.epochs_run == 3, "the run's epochs, as its history has them"
    assert list(train.read_history(tmp_path / "run")["epoch"]) == [0, 1, 2]


def test_a_run_folder_another_process_is_training_is_refused_and_left_as_it_is(tmp_path):
    from helpers import runs

    ds, _ = separable()
    (tmp_path / "run").mkdir()
    with runs.claimed(tmp_path / "run"):  # as another notebook or command training this run would hold it
        with pytest.raises(RuntimeError, match="run is being trained by another process"):
            train.fit(tiny_model(), ds, ds, tmp_path / "run", FAST, epochs=1, verbose=0)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["training.lock"]
    result = train.fit(tiny_model(), ds, ds, tmp_path / "run", FAST, epochs=1, verbose=0)  # released: it trains
    assert result.epochs_run == 1


def crash_after_first_epoch(tmp_path, ds, val, model=None, training=FAST):
    class Crash(Exception):
        pass

    class CrashAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise Crash()

    with pytest.raises(Crash):
        train.fit(model or tiny_model(), ds, val, tmp_path / "run", training, epochs=3,
                  extra_callbacks=[CrashAfterFirstEpoch()], verbose=0)
    return tmp_path / "run" / "backup"


def test_a_run_killed_after_its_last_epoch_is_finished_not_trained_again(tmp_path, capsys):
    ds, _ = separable()
    val, _ = separable(seed=1)
    started = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            started.append(epoch)

    class KillAtTheEnd(keras.callbacks.Callback):  # after the last epoch, before train.json is written
        def on_train_end(self, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.fit(tiny_model(), ds, val, tmp_path / "run", FAST, epochs=2, key="a",
                  extra_callbacks=[Record(), KillAtTheEnd()], verbose=0)
    assert started == [0, 1] and train.readable_backup(tmp_path / "run" / "backup") == 2
    assert not (tmp_path / "run" / "train.json").exists()

    result = train.fit(tiny_model(), ds, val, tmp_path / "run", FAST, epochs=2, key="a",
                       extra_callbacks=[Record()], verbose=0)
    assert started == [0, 1], "the finished epochs were trained again"
    assert result.epochs_run == 2 and result.best_checkpoint
    assert not (tmp_path / "run" / "backup").exists()

    capsys.readouterr()
    again = train.fit(tiny_model(), ds, val, tmp_path / "run", FAST, epochs=2, key="a",
                      extra_callbacks=[Record()], verbose=0)
    assert started == [0, 1] and "finished earlier with these settings, read back" in capsys.readouterr().err
    assert again.best_checkpoint == result.best_checkpoint and again.epochs_run == 2

    other = train.fit(tiny_model(), ds, val, tmp_path / "run", FAST, epochs=1, key="b",
                      extra_callbacks=[Record()], verbose=0)
    assert started == [0, 1, 0] and list(other.history["epoch"]) == [0], "another key trains afresh"


def test_a_backup_cut_short_by_a_kill_falls_back_to_a_fresh_start_with_one_warning(tmp_path, capsys):
    ds, _ = separable()
    val, _ = separable(seed=1)
    backup = crash_after_first_epoch(tmp_path, ds, val)
    assert train.readable_backup(backup) == 1
    assert sorted(p.name for p in backup.iterdir()) == ["latest.weights.h5", "training_metadata.json"]
    weights = backup / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # what a kill mid-write left
    assert train.readable_backup(backup) is None
    capsys.readouterr()
    result = train.fit(tiny_model(), ds, val, tmp_path / "run", FAST, epochs=2, verbose=0)
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warned == [f"warning: the backup in {backup} cannot be read; training starts again from epoch 1"]
    assert list(result.history["epoch"]) == [0, 1] and result.epochs_run == 2


def test_a_resumed_run_keeps_the_best_epoch_of_the_whole_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    pd.DataFrame({"epoch": [0, 1, 2, 3], "val_auc": [0.88, 0.86, 0.87, 0.85],
                  "val_loss": [0.5, 0.4, 0.45, 0.6]}).to_csv(run / "history.csv", index=False)
    model = tiny_model()
    for epoch in (1, 3, 2):  # written in this order, as a resumed run writes epoch 3 after epoch 1
        model.save(run / "checkpoints" / f"tiny-epoch{epoch:02d}-val_auc0.0000.keras")
    assert train.best_checkpoint(run, "val_auc").name == "tiny-epoch01-val_auc0.0000.keras"
    assert train.best_checkpoint(run, "val_loss").name == "tiny-epoch02-val_auc0.0000.keras"
    (run / "checkpoints" / "tiny-epoch01-val_auc0.0000.keras").write_bytes(b"cut short")
    assert train.best_checkpoint(run, "val_auc").name == "tiny-epoch03-val_auc0.0000.keras"
    # what EarlyStopping and ModelCheckpoint had seen when the backup of 3 epochs was written
    assert train.resume_state(run, "val_auc", 3) == {"best": 0.88, "wait": 2, "best_epoch": 0}
    assert train.resume_state(run, "val_loss", 3) == {"best": 0.4, "wait": 1, "best_epoch": 1}
    assert train.resume_state(tmp_path / "none", "val_auc", 3) == {}


def test_a_rerun_of_a_finished_run_starts_a_clean_history(tmp_path):
    ds, _ = separable()
    val, _ = separable(seed=1)
    train.fit(tiny_model(), ds, val, tmp_path / "run", FAST, epochs=3, verbose=0)
    result = train.fit(tiny_model(), ds, val, tmp_path / "run", FAST, epochs=1, verbose=0)
    assert list(result.history["epoch"]) == [0], "epochs of the earlier run leaked into this one"
    assert len(list((tmp_path / "run" / "checkpoints").glob("*.keras"))) == 1


def test_optimizer_options_reach_the_optimizer():
    opt = train.make_optimizer("rmsprop", 0.01, clipnorm=1.0)
    assert opt.clipnorm == 1.0 and float(opt.learning_rate) == pytest.approx(0.01)
    model = train.compile_model(tiny_model(), "sgd", 0.1, optimizer_options={"clipnorm": 0.5})
    assert model.optimizer.clipnorm == 0.5 and model.optimizer.momentum == 0.9


def test_scores_exact_values():
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    p = np.array([0.1, 0.6, 0.2, 0.9, 0.4, 0.7, 0.3, 0.8])
    s = evaluate.scores(y, p, threshold=0.5)
    assert (s["tn"], s["fp"], s["fn"], s["tp"]) == (3, 1, 1, 3)
    assert s["precision"] == 0.75 and s["recall"] == 0.75 and s["f1"] == 0.75
    assert s["balanced_accuracy"] == 0.75 and s["accuracy"] == 0.75
    assert s["roc_auc"] == pytest.approx(15 / 16)
    with pytest.raises(ValueError, match="8 labels but 3"):
        evaluate.scores(y, p[:3])


def test_threshold_is_the_best_f1_cut_on_validation():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.35, 0.3, 0.4, 0.9])
    t = evaluate.choose_threshold(y, p)
    assert t == pytest.approx(0.3)
    assert evaluate.scores(y, p, t)["f1"] == pytest.approx(2 * 0.75 * 1 / 1.75)
    assert evaluate.choose_threshold([1, 1], [0.2, 0.7]) == 0.5


def test_classification_table_and_per_patient():
    y = np.array([0, 1, 1, 0, 0, 1])
    p = np.array([0.2, 0.8, 0.3, 0.1, 0.6, 0.9])
    table = evaluate.classification_table(y, p)
    assert list(table.index[:2]) == ["IDC(-)", "IDC(+)"]
    assert table.loc["IDC(+)", "support"] == 3 and table.loc["IDC(+)", "recall"] == pytest.approx(0.667)
    index = pd.DataFrame({"patient": ["a", "a", "a", "b", "b", "b"], "label": y})
    per = evaluate.per_patient(index, p, 0.5).set_index("patient")
    assert per.loc["a", "patches"] == 3 and per.loc["a", "idc_share"] == pytest.approx(2 / 3)
    assert per.loc["a", "predicted_idc_share"] == pytest.approx(1 / 3)
    assert per.loc["b", "accuracy"] == pytest.approx(2 / 3)


def test_concurrent_registry_writes_lose_no_row(tree, tmp_path):
    cfg = source.resolve("smoke", data_dir=tree, output_dir=tmp_path)
    errors = []

    def writer(k):
        try:
            for i in range(5):
                results.record(cfg, f"nb{k}", [{"run": f"{k}-{i}"}], split="none")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results.load(tmp_path)["run"]) == sorted(f"{k}-{i}" for k in range(4) for i in range(5))


def test_an_ema_optimizer_is_validated_and_checkpointed_with_its_averaged_weights(tmp_path):
    """With a momentum near 1 the average stays near the first steps' weights: the kept model
    moves far less from its start than the same run's raw weights, and still learns."""
    ds, _ = separable()
    val, _ = separable(seed=1)

    def run(name, **ema):
        keras.utils.set_random_seed(0)
        model = tiny_model()
        start = [w.copy() for w in model.get_weights()]
        training = train.Training(train.make_optimizer("sgd", 0.1, **ema), monitor="val_loss", recalibrate_bn=0)
        result = train.fit(model, ds, val, tmp_path / name, training, epochs=3, verbose=0)
        kept = result.best_model(model)
        moved = sum(float(np.abs(a - b).sum()) for a, b in zip(kept.get_weights(), start))
        return moved, result.history

    raw, _ = run("raw")
    averaged, history = run("ema", use_ema=True, ema_momentum=0.999)
    assert averaged < 0.5 * raw, (averaged, raw)
    assert history["accuracy"].iloc[-1] > 0.9  # the training steps use the raw weights


def dropout_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((50, 50, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Activation("relu")(x))
    x = keras.layers.Dropout(0.5)(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x), name="drop")


def test_a_resumed_run_repeats_the_uninterrupted_one(tmp_path):
    # Shuffling, balanced sampling, augmentation and Dropout all draw random numbers; keyed on the
    # epoch, a run killed after epoch 1 and resumed ends with the weights of the run never stopped.
    from helpers.data import pipeline

    rng = np.random.default_rng(0)
    labels = (rng.random(160) < 0.3).astype(np.int32)
    images = np.clip(rng.normal(120 + 60 * labels[:, None, None, None], 30, (160, 50, 50, 3)), 0, 255)
    images = images.astype(np.uint8)

    def data():
        kw = {"images": images, "labels": labels, "batch_size": 32, "one_hot": True}
        return (pipeline.make_dataset(**kw, balance=True, augment="histology", seed=3),
                pipeline.make_dataset(**kw))

    training = train.Training(recalibrate_bn=2)
    whole = train.fit(dropout_model(), *data(), tmp_path / "whole", training, epochs=3, verbose=0)
    crash_after_first_epoch(tmp_path, *data(), model=dropout_model(), training=training)
    resumed = train.fit(dropout_model(), *data(), tmp_path / "run", training, epochs=3, verbose=0)
    a, b = whole.history, resumed.history
    assert list(b["epoch"]) == [0, 1, 2]
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
    np.testing.assert_allclose(b["val_loss"], a["val_loss"], rtol=1e-5)
    for x, y in zip(keras.models.load_model(whole.best_checkpoint).weights,
                    keras.models.load_model(resumed.best_checkpoint).weights):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)
