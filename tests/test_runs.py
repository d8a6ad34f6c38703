"""runs: the one run cache (a fingerprint of the settings, a record saved with it)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import runs

def test_a_fingerprint_is_canonical_and_tells_settings_and_data_apart():
    assert runs.fingerprint({"a": 1, "b": [2, 3]}) == runs.fingerprint({"b": [2, 3], "a": 1})
    assert runs.fingerprint({"a": 1}) != runs.fingerprint({"a": 2})
    assert runs.fingerprint({"a": 1}) == hashlib.sha1(b'{"a": 1}').hexdigest()[:12]
    assert len(runs.fingerprint({"a": 1}, length=16)) == 16
    x = np.arange(6, dtype=np.uint8)
    assert runs.fingerprint("s", x) != runs.fingerprint("s", x[::-1].copy())
    assert runs.fingerprint("s", x[::2]) == runs.fingerprint("s", x[::2].copy())  # by value, not by layout
    assert runs.fingerprint({"p": Path("/x")}) == runs.fingerprint({"p": "/x"})  # str() of what JSON cannot show


def test_a_record_is_read_back_only_with_its_key(tmp_path):
    path = tmp_path / "run" / "done.json"
    assert runs.read_record(path, "k1") is None  # not there
    runs.write_record(path, "k1", {"row": {"f1": 0.5}})
    assert runs.read_record(path, "k1") == {"row": {"f1": 0.5}}
    assert runs.read_record(path, "k2") is None
    assert json.loads(path.read_text())["key"] == "k1" and list(path.parent.iterdir()) == [path]
    path.write_text('{"key": "k1", "row": ')  # cut short
    assert runs.read_record(path, "k1") is None
    path.write_text('["k1"]')
    assert runs.read_record(path, "k1") is None


def test_a_claimed_folder_cannot_be_claimed_again_until_it_is_released(tmp_path):
    folder = tmp_path / "fold0"
    with runs.claimed(folder):
        with pytest.raises(RuntimeError, match=f"{folder} is being trained by another process"):
            with runs.claimed(folder):
                pass
    with runs.claimed(folder):  # released: free again
        pass
