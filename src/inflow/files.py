"""Atomic, link-safe file writes: the rule for every file written inside a persisted DVC output.

The project's DVC cache links workspace files to their cache objects (``cache.type = reflink,hardlink,symlink`` in
``.dvc/config``), so a store at rest exists once on disk. Outputs marked ``persist: true`` (the gradient, embedding,
landmark and In2Core stores) are also grown in place, and not only inside ``dvc repro`` (which first replaces every
linked file by a private copy, "unprotecting" it): a stage run by hand, or a resumed store, writes into the files
as they are. Opening an existing file for writing (``Path.write_text``, ``open(path, "w")``, ``np.save``,
``torch.save``) writes *through* a hardlink or symlink into the DVC cache object, silently corrupting the cached
version (DVC's read-only mode on cache files does not stop root, and DVC trusts read-only objects without
rehashing them).

The helpers here write a new file next to the target and ``os.replace`` it over the target instead: the link (the
name) is replaced, the object it pointed to is never opened for writing, and readers see the old or the new
content, never a partial file. Zarr's local store already writes its chunks and metadata this way.

* :func:`atomic_write_bytes` / :func:`atomic_write_text`: the whole content at once;
* :func:`atomic_path`: a temporary path to hand to a writer that wants a file name (``torch.save``,
  ``np.save``, ``DataFrame.write_parquet``); it replaces the target when the ``with`` body succeeds;
* :func:`unprotect`: what ``dvc repro`` does before running a stage, for a stage run by hand
  (:func:`flows.common.unprotect_outputs`): every linked file of an output becomes a private copy, so even a writer
  that rewrites a file in place no longer reaches the cache.

Writes to a path that cannot exist yet (just after ``shutil.rmtree`` or ``unlink``) are safe without them:
removing a link never touches its target.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "unprotect"]


def _temp_sibling(target: Path) -> Path:
    """Create (empty, exclusively) and return a temporary file in ``target``'s directory: ``.<name>.<random>.tmp``
    plus ``target``'s suffix, so writers that append a suffix they miss (``np.save``) keep the name they were given.
    Created with mode 0o666 less the umask, like a plain ``open(path, "w")``."""
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp{target.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        return tmp


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the body returns, move it over ``path`` (``os.replace``).

    The body writes the complete new content to the yielded path (it exists, empty). If the body raises, the
    temporary file is removed and ``path`` is left as it was. ``path`` itself, when it is a hardlink or a
    symlink, is replaced as a name: the file it linked to is never written. ``fsync`` flushes the file and then
    its directory to disk before returning (durability across a power loss; slower). The directory must exist.
    """
    target = Path(path)
    tmp = _temp_sibling(target)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync(target.parent, directory=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically and link-safely (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8",
                      fsync: bool = False) -> Path:
    """Write ``text`` (encoded with ``encoding``) to ``path`` atomically and link-safely; returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync)


def _linked(path: Path) -> bool:
    """Whether ``path`` is a symlink to a file or a regular file with other names (a hardlink); a dangling symlink
    or a symlink to a directory is not (there is no file content to copy)."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return path.is_file()  # follows the link
    return stat.S_ISREG(info.st_mode) and info.st_nlink > 1


def _private_copy(path: Path) -> None:
    """Replace ``path`` by a copy of the content it links to (the copy follows a symlink), as one ``os.replace``."""
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)  # into the empty temporary file: its plain mode (0o666 less the umask) stays


def unprotect(path: str | os.PathLike[str]) -> int:
    """Replace every linked file at or under ``path`` by a private copy of its content; return how many were.

    A file that is a symlink (to a file) or has more than one name (``st_nlink > 1``: a hardlink, as DVC links
    workspace files to its cache objects) is copied to a temporary name in its directory, the copy following a
    symlink, then moved over the name (``os.replace``): the linked object is only read, never written, and the
    new file has a normal writable mode. This is DVC's "unprotect", which ``dvc repro`` applies to a stage's
    outputs before running it. Regular private files are left as they are (same inode), as are dangling symlinks
    and symlinks to directories (a directory tree is walked without following them). A missing ``path`` is a
    no-op (0). Costs one ``lstat`` per file when nothing is linked.
    """
    root = Path(path)
    if not os.path.lexists(root):
        return 0
    if root.is_symlink() or not root.is_dir():
        if _linked(root):
            _private_copy(root)
            return 1
        return 0
    replaced = 0
    for directory, _dirs, files in os.walk(root):  # followlinks=False: a symlinked directory is listed, not entered
        for name in files:
            file = Path(directory, name)
            if _linked(file):
                _private_copy(file)
                replaced += 1
    return replaced
