"""The gateway's durable state: the jobs it owns and per-key usage, in one atomically written JSON file.

A restarted gateway reads it and reattaches to the jobs still alive instead of submitting new
ones; `auroragpt gateway usage` reads the usage table from it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from auroragpt.atomic import write_atomically
from auroragpt.errors import ConfigError
from auroragpt.gateway.jobs import Job


@dataclass
class Usage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Registry:
    path: Path
    jobs: dict[str, Job] = field(default_factory=dict)
    usage: dict[str, Usage] = field(default_factory=dict)
    submits: int = 0  # jobs submitted over the gateway's life (restarts included)
    _version: int = field(default=0, repr=False)  # of the latest snapshot
    _written: tuple[int, str] = field(default=(0, ""), repr=False)  # the snapshot the file holds
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: Path) -> "Registry":
        reg = cls(path)
        if not path.exists():
            return reg
        try:
            raw = json.loads(path.read_text())
            reg.jobs = {j["id"]: Job(**j) for j in raw.get("jobs", [])}
            reg.usage = {k: Usage(**u) for k, u in raw.get("usage", {}).items()}
            reg.submits = int(raw.get("submits", 0))
        except (ValueError, TypeError, KeyError) as err:
            raise ConfigError(f"gateway state file {path} is unreadable: {err}",
                              hint="move it aside (jobs it lists must then be cancelled by hand) and restart") from None
        return reg

    def save(self) -> None:
        self.write(self.snapshot())

    def snapshot(self) -> tuple[int, str]:
        """The state as text, numbered, taken on the event loop; `write` may then run in a thread."""
        data = {"jobs": [j.to_dict() for j in self.jobs.values()], "submits": self.submits,
                "usage": {k: vars(u) for k, u in self.usage.items()}}
        self._version += 1
        return self._version, json.dumps(data, indent=1)

    def write(self, snapshot: tuple[int, str]) -> None:
        """Write a snapshot unless the file holds it or a newer one already (polls mostly change nothing)."""
        with self._lock:
            version, text = snapshot
            if version <= self._written[0] or text == self._written[1]:
                return
            write_atomically(self.path, text)
            self._written = snapshot

    def account(self, key_id: str, prompt_tokens: int, completion_tokens: int) -> None:
        usage = self.usage.setdefault(key_id, Usage())
        usage.requests += 1
        usage.prompt_tokens += prompt_tokens
        usage.completion_tokens += completion_tokens


def usage_table(registry: Registry) -> str:
    """The per-key usage as an aligned text table (keys shown by the first 12 hex digits of their hash)."""
    rows = [("key", "requests", "prompt_tokens", "completion_tokens")]
    for key, u in sorted(registry.usage.items()):
        rows.append((key[:12], str(u.requests), str(u.prompt_tokens), str(u.completion_tokens)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)
