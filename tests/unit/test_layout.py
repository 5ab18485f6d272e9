"""The one answer to "is this published version intact?" (bridge.layout), and the one backoff."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import pytest

from bridge.layout import damaged_files, version_prefix
from bridge.retry import backoff_delay


@dataclass
class Rec:
    path: str
    size: int
    sha256: str


def _rec(path: str, data: bytes) -> Rec:
    return Rec(path, len(data), hashlib.sha256(data).hexdigest())


FILES = {"MLmodel": b"flavors: {}\n", "model.pkl": b"\x00" * 64, "requirements.txt": b"x\n"}
PREFIX = version_prefix("models/", "churn", "3")


def _store(files: dict[str, bytes]):
    present = {PREFIX + p: len(d) for p, d in files.items()}
    reads = []
    lock = threading.Lock()

    def digest(key: str, size: int):
        with lock:
            reads.append(key)
        data = files[key[len(PREFIX) :]]
        return len(data), hashlib.sha256(data).hexdigest()

    return present, digest, reads


def test_the_layout_is_model_key_then_version():
    assert PREFIX == "models/churn/3/"


@pytest.mark.parametrize("workers", [1, 4])
def test_intact_when_every_file_has_its_size_and_hash(workers):
    present, digest, reads = _store(FILES)
    records = [_rec(p, d) for p, d in FILES.items()]
    assert damaged_files(records, PREFIX, present) == []
    assert damaged_files(records, PREFIX, present, digest, workers=workers) == []
    assert sorted(reads) == sorted(PREFIX + p for p in FILES)


@pytest.mark.parametrize("workers", [1, 4])
def test_each_kind_of_damage_is_named(workers):
    records = [_rec(p, d) for p, d in FILES.items()]
    now = dict(FILES)
    del now["requirements.txt"]
    now["MLmodel"] = b"tampered"  # another size
    now["model.pkl"] = b"\x01" * 64  # same size, other bytes
    present, digest, _ = _store(now)
    assert damaged_files(records, PREFIX, present) == [
        ("MLmodel", "MLmodel has 8 bytes, the marker says 12"),
        ("requirements.txt", "requirements.txt is missing"),
    ]
    assert damaged_files(records, PREFIX, present, digest, workers=workers) == [
        ("MLmodel", "MLmodel has 8 bytes, the marker says 12"),
        ("requirements.txt", "requirements.txt is missing"),
        ("model.pkl", "model.pkl does not match its SHA-256"),
    ]
    assert len(damaged_files(records, PREFIX, present, digest, first_only=True)) == 1


def test_backoff_grows_to_its_cap_and_keeps_its_floor():
    for attempt in range(40):
        d = min(20.0, 0.2 * 2**attempt)
        assert 0 <= backoff_delay(attempt) <= d
        assert 0.5 * min(30.0, 2**attempt) <= backoff_delay(attempt, 1.0, 30.0, least=0.5) <= 30.0
