"""`python -m auroragpt.runtime.elastic ARGS`: torch's elastic launcher (`torch.distributed.run`, the
engine behind `torchrun`) with the same arguments, minus its exception traceback.

When a rank fails or the job is interrupted, `torchrun` ends in a Python traceback and a table that
repeat what the rank already printed. `auroragpt launch` names the failing rank itself, so this
wrapper turns those endings into the exit code alone: the failed rank's code, or 128 + signal.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except ChildFailedError as err:
        _, failure = err.get_first_failure()
        code = failure.exitcode
        return 128 - code if code < 0 else (code or 1)
    except SignalException as err:
        return 128 + int(err.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
