"""The GPU switches: mixed precision, XLA and a tf.distribute strategy, picked from the hardware
(docs/gpu.md's table), applied once per process by ``setup()``; an argument, or ``IDC_MIXED_PRECISION``
and ``IDC_XLA`` (``0`` or ``1``) in the environment, overrides each.

On a CPU mixed precision and XLA are off: float16 is emulated there, and XLA's compile time never
pays back in a teaching run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    device: str  # "tpu", "gpu" or "cpu"
    gpus: int
    mixed_precision: bool
    xla: bool
    strategy: str  # "tpu", "mirrored" or "default"


_current: Settings | None = None
_strategy = None


def _flag(value, env: str, default: bool) -> bool:
    """An explicit value wins, then the environment variable, then the hardware's default."""
    raw, on = os.environ.get(env, "").strip().lower(), ("1", "true", "on", "yes")
    if value is not None or raw in ("", "auto"):
        return default if value is None else bool(value)
    if raw not in (*on, "0", "false", "off", "no"):
        raise ValueError(f"{env}={os.environ[env]!r}: use 1 or 0 (or leave it unset for the hardware's default)")
    return raw in on


def choose(gpus: int, tpu: bool = False, mixed_precision=None, xla=None, strategy: str | None = None) -> Settings:
    """The settings for a machine with ``gpus`` GPUs (and a TPU or not), without TensorFlow."""
    if gpus < 0:
        raise ValueError(f"gpus must be 0 or more, got {gpus}")
    device = "tpu" if tpu else "gpu" if gpus else "cpu"
    accelerated = device != "cpu"
    strategy = strategy or ("tpu" if tpu else "mirrored" if gpus > 1 else "default")
    return Settings(device=device, gpus=gpus,
                    mixed_precision=_flag(mixed_precision, "IDC_MIXED_PRECISION", accelerated),
                    # Keras turns XLA off under a distribution strategy; so do we, to say so.
                    xla=_flag(xla, "IDC_XLA", accelerated) and strategy == "default",
                    strategy=strategy)


def _tpu_resolver():
    import tensorflow as tf

    try:
        if os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME"):
            return tf.distribute.cluster_resolver.TPUClusterResolver()
    except (ValueError, RuntimeError):
        pass
    return None


def make_strategy(name: str, resolver=None):
    """The tf.distribute strategy called ``name``: "tpu" (on the TPU ``resolver`` found), "mirrored" or "default"."""
    import tensorflow as tf

    if name == "tpu":
        if resolver is None:
            raise RuntimeError("a TPU strategy was asked for, but no TPU answers (COLAB_TPU_ADDR / TPU_NAME)")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "mirrored":
        # Every GPU; on a machine without one, every logical CPU device (how the tests
        # run it: one CPU split in two).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown strategy {name!r}; choose tpu, mirrored or default")


def setup(mixed_precision=None, xla=None, strategy: str | None = None) -> Settings:
    """Detect the hardware, apply the choice and remember it. Call before building models: the
    mixed-precision policy applies to layers created after it."""
    global _current, _strategy
    import keras
    import tensorflow as tf

    resolver = _tpu_resolver() if strategy in (None, "tpu") else None
    settings = choose(len(tf.config.list_physical_devices("GPU")), resolver is not None, mixed_precision, xla, strategy)
    keras.mixed_precision.set_global_policy("mixed_float16" if settings.mixed_precision else "float32")
    _strategy, _current = make_strategy(settings.strategy, resolver), settings
    return settings


def current() -> Settings:
    """The settings in force (``setup()`` with the defaults on first use)."""
    return _current if _current is not None else setup()


def strategy():
    """The strategy in force; models and optimizers are created in its scope."""
    current()
    return _strategy


def replicas() -> int:
    return int(strategy().num_replicas_in_sync)


def global_batch(per_replica: int) -> int:
    """The batch the input pipeline makes: ``per_replica`` examples for each replica."""
    if per_replica < 1:
        raise ValueError(f"batch size must be at least 1, got {per_replica}")
    return int(per_replica) * replicas()


def describe() -> str:
    s = current()
    return (f"device {s.device} ({s.gpus} GPU), mixed precision {'on' if s.mixed_precision else 'off'}, "
            f"XLA {'on' if s.xla else 'off'}, strategy {s.strategy} ({replicas()} replica(s))")
