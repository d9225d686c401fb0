"""nclab.io's atomic writer: the content arrives complete, is fsync-ed before the rename, no
temporary file is left behind (also when writing fails), and the file modes are those of a plain
``open`` (0666 less the umask, JSON included)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from nclab import io as nio
from nclab.io import atomic_write, write_json_atomic


@pytest.fixture
def fsyncs(monkeypatch):
    """Record the file descriptors passed to os.fsync (and still sync them)."""
    calls = []
    real = os.fsync

    def spy(fd):
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(nio.os, "fsync", spy)
    return calls


def test_bytes_and_callable_content_is_complete(tmp_path, fsyncs):
    payload = os.urandom(3 << 20)  # several MiB: more than one write buffer
    path = atomic_write(tmp_path / "sub" / "blob.bin", payload)  # the folder is created
    assert path == tmp_path / "sub" / "blob.bin" and path.read_bytes() == payload

    def write(f):
        for i in range(1000):
            f.write(b"%d\n" % i)

    atomic_write(path, write)  # replaces the old content entirely
    assert path.read_bytes() == b"".join(b"%d\n" % i for i in range(1000))
    assert len(fsyncs) == 2
    assert os.listdir(tmp_path / "sub") == ["blob.bin"]  # no temporary file left


def test_fsync_happens_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(nio.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(nio.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b)))
    atomic_write(tmp_path / "x", b"data")
    assert events == ["fsync", "replace"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.bin"
    atomic_write(path, b"old")

    def broken(f):
        f.write(b"half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.bin"]


def test_json_through_the_atomic_writer(tmp_path, fsyncs):
    path = write_json_atomic(tmp_path / "s.json", {"a": 1.5, "nan": float("nan"), "inf": [float("inf")]})
    assert json.loads(path.read_text()) == {"a": 1.5, "nan": None, "inf": [None]}
    assert path.read_text().endswith("}\n")
    assert len(fsyncs) == 1
    assert os.listdir(tmp_path) == ["s.json"]


def test_file_modes(tmp_path):
    umask = os.umask(0o022)
    try:
        plain = atomic_write(tmp_path / "plain", b"")
        private = write_json_atomic(tmp_path / "p.json", {})
    finally:
        os.umask(umask)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644  # as open(path, "wb") makes it
    assert stat.S_IMODE(private.stat().st_mode) == 0o644  # results readable by collaborators
