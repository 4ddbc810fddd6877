"""Publish files and folders so that readers see the old contents or the new, never half of the new.

One writer for files (`atomic_path`, and `write_atomically` on top of it) and one publisher for
folders (`atomic_folder`): build under a temporary name next to the target, then rename. With
`durable=True` the data and the rename are fsynced (file, then parent folder), so a power loss
after the call returns cannot leave an empty or missing file; use it for state a restart reads
(checkpoint metadata, model folders). Temporary files are named `NAME.tmpPID`, which cleanup code
recognises; temporary folders `.NAME.tmp-XXXXXXXX`. Everything keeps the permissions the umask
gives (tempfile's 0600/0700 would leave weights unreadable to the group).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from auroragpt import pids


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (other threads may be
    creating files); elsewhere set and restored at once, the only portable way."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders; the data files were flushed
        pass
    finally:
        os.close(fd)


def _fix_mode(path: Path, is_dir: bool) -> None:
    """Give what a third party wrote (tempfile, safetensors) the mode a plain open() would have."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; write the file there. On success it is renamed to
    `path` (fsynced when `durable`); on any error it is removed and `path` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        _fix_mode(tmp, is_dir=False)
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_path(path.parent)


def write_atomically(path: str | os.PathLike[str], data: str | bytes, *, durable: bool = False) -> Path:
    """Write `data` (text as UTF-8) to `path` through `atomic_path`."""
    with atomic_path(path, durable=durable) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def streaming_atomically(path: str | os.PathLike[str], *, durable: bool = False) -> Iterator[IO[bytes]]:
    """A binary stream for a file too large to hold in memory, published through `atomic_path`."""
    with atomic_path(path, durable=durable) as tmp, open(tmp, "wb") as stream:
        yield stream


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str], *, durable: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; fill it. On success it replaces `path`
    whole (an older folder there is moved aside, then deleted); on any error it is deleted."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        for item in [tmp, *tmp.rglob("*")]:
            _fix_mode(item, item.is_dir())
            if durable:
                fsync_path(item)
        publish_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if durable:
        fsync_path(final.parent)


def publish_folder(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Rename finished folder `tmp` to `final`; an older `final` is moved aside first, then deleted."""
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_creatable(path: str | os.PathLike[str], name: str) -> None:
    """Refuse, before any work, an output `path` that could not be published: its nearest existing
    ancestor must be a folder this process can write. `name` is how the user gave it (--out ...)."""
    from auroragpt.errors import ConfigError

    ancestor = Path(path)
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor != Path(path) and not ancestor.is_dir():
        raise ConfigError(f"{name} {path} cannot be created: {ancestor} is a file, not a folder",
                          hint=f"set {name} to a path under a folder")
    folder = ancestor if ancestor.is_dir() else ancestor.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{name} {path} cannot be created: {folder} is not writable",
                          hint=f"set {name} to a folder you can write to")


def remove_orphaned_temporaries(paths: Iterable[Path]) -> None:
    """Delete the `NAME.tmpPID` files among `paths` whose writer has died (a killed run's
    half-written outputs); a live writer's, this process's and other names are left alone."""
    for path in paths:
        pid = path.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pids.alive(int(pid)):
            path.unlink(missing_ok=True)
