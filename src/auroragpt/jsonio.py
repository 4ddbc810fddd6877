"""The one reader of JSON files: a missing, unreadable or malformed file is a user-facing error
naming the file (and line), never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from auroragpt.errors import AuroraError, DataError

_MISSING = object()


def read_json(path: str | os.PathLike[str], error: type[AuroraError] = DataError, *, hint: str | None = None,
              want: type | None = None, default: Any = _MISSING) -> Any:
    """Parsed contents of `path`. Failures raise `error` (with `hint`), or return `default` when
    one is given; `want` (dict, list) also refuses a file holding another kind of JSON value."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problem = f"{path} does not exist"
    except IsADirectoryError:
        problem = f"{path} is a folder, not a JSON file"
    except UnicodeDecodeError as err:
        problem = f"{path}: not UTF-8 text (byte {err.start}: {err.reason})"
    except json.JSONDecodeError as err:
        problem = f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
    except OSError as err:
        problem = f"{path}: cannot be read ({err.strerror or err})"
    else:
        if want is None or isinstance(data, want):
            return data
        problem = f"{path}: expected a JSON {'object' if want is dict else want.__name__}, found {type(data).__name__}"
    if default is not _MISSING:
        return default
    raise error(problem, hint=hint)
