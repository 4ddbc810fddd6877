"""One place that counts what SWiPe sends: bytes and messages per kind of call.

Every window/sequence-parallel communication goes through a `CommLedger`, so the benchmark and the
tests read the same numbers the code produced, and can compare them with a closed-form model.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class CommLedger:
    """Bytes and messages this rank *sent*, per call kind (e.g. 'wp.shift', 'sp.all_to_all')."""

    bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    messages: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def record(self, kind: str, nbytes: int, messages: int) -> None:
        self.bytes[kind] += int(nbytes)
        self.messages[kind] += int(messages)
        self.calls[kind] += 1

    def reset(self) -> None:
        self.bytes.clear()
        self.messages.clear()
        self.calls.clear()

    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def total_messages(self) -> int:
        return sum(self.messages.values())

    def snapshot(self) -> dict[str, dict[str, int]]:
        """{kind: {"bytes", "messages", "calls"}}, plain ints (JSON-ready)."""
        return {k: {"bytes": self.bytes[k], "messages": self.messages[k], "calls": self.calls[k]}
                for k in sorted(set(self.bytes) | set(self.calls))}

    def table(self) -> str:
        """A printable table, one line per call kind."""
        lines = [f"{'call':<18}{'calls':>8}{'messages':>10}{'bytes':>14}"]
        for kind, row in self.snapshot().items():
            lines.append(f"{kind:<18}{row['calls']:>8}{row['messages']:>10}{row['bytes']:>14}")
        lines.append(f"{'total':<18}{'':>8}{self.total_messages():>10}{self.total_bytes():>14}")
        return "\n".join(lines)
