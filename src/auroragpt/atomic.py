"""Write a file so that readers see the old contents or the new, never half of the new."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator


def temporary_name(path: Path) -> Path:
    """`NAME.tmpPID`: the name both writers use (and cleanup code recognises)."""
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def streaming_atomically(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Write a file too large to hold in memory: a binary stream to `NAME.tmpPID`, renamed when the
    block ends without error, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as stream:
            yield stream
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write `data` under a temporary name (`NAME.tmpPID`, which cleanup code recognises) and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)
    return path
