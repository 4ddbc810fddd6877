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

    def table(self, closed_form: dict[str, tuple[int, int]] | None = None) -> str:
        """A printable table, one line per call kind; with `closed_form` ({kind: (bytes, messages)},
        e.g. from `window_cost`) also the predicted figures and whether each line matches."""
        rows = self.snapshot()
        kinds = sorted(set(rows) | set(closed_form or {}))
        head = f"{'call':<20}{'calls':>7}{'messages':>10}{'bytes':>14}"
        lines = [head + (f"{'model msgs':>12}{'model bytes':>14}  equal" if closed_form is not None else "")]
        for kind in kinds:
            row = rows.get(kind, {"calls": 0, "messages": 0, "bytes": 0})
            line = f"{kind:<20}{row['calls']:>7}{row['messages']:>10}{row['bytes']:>14}"
            if closed_form is not None:
                nbytes, messages = closed_form.get(kind, (0, 0))
                same = (nbytes, messages) == (row["bytes"], row["messages"])
                line += f"{messages:>12}{nbytes:>14}  {'yes' if same else 'NO'}"
            lines.append(line)
        total = f"{'total':<20}{'':>7}{self.total_messages():>10}{self.total_bytes():>14}"
        if closed_form is not None:
            total += f"{sum(m for _, m in closed_form.values()):>12}{sum(b for b, _ in closed_form.values()):>14}"
        lines.append(total)
        return "\n".join(lines)

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, dict[str, int]]) -> "CommLedger":
        """The ledger a `snapshot()` was taken from (e.g. one sent back by another rank)."""
        ledger = cls()
        for kind, row in snapshot.items():
            ledger.bytes[kind], ledger.messages[kind], ledger.calls[kind] = row["bytes"], row["messages"], row["calls"]
        return ledger
