"""Atomic, link-safe writes and unprotecting (inflow.files): a write over a DVC-linked workspace file never reaches
the cache object."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from inflow.files import atomic_path, atomic_write_bytes, atomic_write_text, unprotect


def linked(tmp_path: Path, kind: str, content: str = "cached version\n") -> tuple[Path, Path]:
    """A "cache object" and a workspace name linked to it (``kind``: hardlink or symlink), as DVC links them."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "work").mkdir()
    obj, name = tmp_path / "cache" / "ab12", tmp_path / "work" / "landmarks.json"
    obj.write_text(content)
    if kind == "hardlink":
        os.link(obj, name)
    else:
        name.symlink_to(obj)
    return obj, name


def write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def write_bytes(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_via_path(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:  # a writer that wants a file name
            handle.write(text)


WRITERS = [write_text, write_bytes, write_via_path]


@pytest.mark.parametrize("kind", ["hardlink", "symlink"])
def test_a_plain_write_goes_through_the_link_into_the_cache_object(tmp_path: Path, kind: str) -> None:
    """The hazard is real: what every test below guards against (as root, a read-only mode would not stop it)."""
    obj, name = linked(tmp_path, kind)
    obj.chmod(0o444)  # DVC's protection of cache objects
    if os.geteuid() != 0:  # an unprivileged user is stopped by the mode; root (as we run) is not
        obj.chmod(0o644)
    name.write_text("grown in place\n")
    assert obj.read_text() == "grown in place\n"


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__)
@pytest.mark.parametrize("kind", ["hardlink", "symlink"])
def test_an_atomic_write_replaces_the_link_and_leaves_the_cache_object(tmp_path: Path, kind: str,
                                                                       writer: Callable[[Path, str], None]) -> None:
    obj, name = linked(tmp_path, kind)
    obj.chmod(0o444)
    writer(name, "grown in place\n")
    assert name.read_text() == "grown in place\n"
    assert obj.read_text() == "cached version\n"  # the other name still sees the cached bytes
    assert not name.is_symlink() and name.stat().st_ino != obj.stat().st_ino
    assert obj.stat().st_nlink == 1
    assert sorted(p.name for p in name.parent.iterdir()) == [name.name]  # no temporary file left


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__)
def test_an_atomic_write_creates_a_new_file_with_plain_permissions(tmp_path: Path,
                                                                   writer: Callable[[Path, str], None]) -> None:
    plain, target = tmp_path / "plain.json", tmp_path / "new.json"
    plain.write_text("x")
    writer(target, "fresh\n")
    assert target.read_text() == "fresh\n"
    assert (target.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)  # umask applies, not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "plain.json"]


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path: Path) -> None:
    obj, name = linked(tmp_path, "hardlink")
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic_path(name) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("writer died")
    assert name.read_text() == obj.read_text() == "cached version\n"
    assert name.stat().st_ino == obj.stat().st_ino  # still linked: nothing was replaced
    assert sorted(p.name for p in name.parent.iterdir()) == [name.name]


def test_the_temporary_path_keeps_the_suffix_so_np_save_writes_where_it_is_told(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint-4.drift.npy"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npy" and tmp.exists()
        np.save(tmp, np.arange(3.0))
    np.testing.assert_array_equal(np.load(target), np.arange(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_fsync_and_return_value(tmp_path: Path) -> None:
    assert atomic_write_text(tmp_path / "a.txt", "é", fsync=True) == tmp_path / "a.txt"
    assert (tmp_path / "a.txt").read_bytes() == "é".encode()
    assert atomic_write_bytes(str(tmp_path / "b.bin"), b"\x00\x01", fsync=True) == tmp_path / "b.bin"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_a_missing_directory_raises_like_a_plain_write(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "absent" / "x.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_unprotect_turns_linked_files_of_a_tree_into_private_copies(tmp_path: Path) -> None:
    """What ``dvc repro`` does before a stage runs: every hardlink or symlink into the cache becomes a private copy."""
    cache, out = tmp_path / "cache", tmp_path / "work" / "store"
    cache.mkdir()
    (out / "chunks").mkdir(parents=True)
    hard_obj, sym_obj = cache / "aa11", cache / "bb22"
    hard_obj.write_bytes(b"hardlinked \x00 bytes")
    sym_obj.write_bytes(b"symlinked bytes")
    for obj in (hard_obj, sym_obj):
        obj.chmod(0o444)  # DVC's protection of cache objects
    hard, sym, plain = out / "chunks" / "0.0", out / "meta.json", out / "plain.txt"
    os.link(hard_obj, hard)
    sym.symlink_to(sym_obj)
    plain.write_text("private already\n")
    plain_inode = plain.stat().st_ino

    assert unprotect(out) == 2
    assert hard.read_bytes() == b"hardlinked \x00 bytes" and sym.read_bytes() == b"symlinked bytes"
    assert not sym.is_symlink() and hard.stat().st_ino != hard_obj.stat().st_ino
    assert hard_obj.stat().st_nlink == 1 and hard.stat().st_nlink == 1
    assert plain.stat().st_ino == plain_inode and plain.read_text() == "private already\n"
    for path in (hard, sym):
        assert path.stat().st_mode & 0o200  # a normal writable file, not the cache object's 0o444
        path.write_text("grown in place\n")  # a plain write, in place: no longer reaches the cache
    assert hard_obj.read_bytes() == b"hardlinked \x00 bytes" and sym_obj.read_bytes() == b"symlinked bytes"
    assert sorted(p.name for p in out.rglob("*")) == ["0.0", "chunks", "meta.json", "plain.txt"]  # no temp file
    assert unprotect(out) == 0  # nothing linked any more: a walk of lstat calls


@pytest.mark.parametrize("kind", ["hardlink", "symlink"])
def test_unprotect_a_single_linked_file(tmp_path: Path, kind: str) -> None:
    obj, name = linked(tmp_path, kind)
    assert unprotect(name) == 1
    assert not name.is_symlink() and name.stat().st_ino != obj.stat().st_ino
    name.write_text("grown in place\n")
    assert obj.read_text() == "cached version\n"


def test_unprotect_leaves_what_has_no_content_to_copy(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "dangling").symlink_to(tmp_path / "gone")
    (out / "linked_dir").symlink_to(tmp_path / "elsewhere")
    assert unprotect(out) == 0
    assert (out / "dangling").is_symlink() and (out / "linked_dir").is_symlink()
    assert unprotect(out / "linked_dir") == 0  # a symlinked directory is not entered


def test_unprotect_a_missing_path_is_a_no_op(tmp_path: Path) -> None:
    assert unprotect(tmp_path / "absent") == 0
    assert unprotect(str(tmp_path / "absent" / "deeper")) == 0
    assert list(tmp_path.iterdir()) == []
