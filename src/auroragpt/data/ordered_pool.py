"""Worker processes that run tasks and hand results back in submission order; a dead worker is an error.

Why not `concurrent.futures.ProcessPoolExecutor`: all its workers share one result pipe, so a worker
killed halfway through writing a result leaves the parent waiting forever for the rest of the
message. Here every worker has its own pipe, held only by it and the parent, and the parent waits
on the pipe and the process sentinel together: a killed worker shows up as EOF or as a finished
sentinel, never as a hang. Each worker has at most one task at a time, so neither side can block
writing while the other is also writing. A worker whose parent dies sees EOF on its pipe and exits.
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator


class WorkerDiedError(RuntimeError):
    """A worker process exited (signal, out of memory) while tasks were outstanding."""


def _worker_main(conn, fn: Callable, initializer: Callable | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        try:
            message = (True, fn(task), None)
        except Exception as err:
            message = (False, err, getattr(err, "hint", None))
        try:
            conn.send(message)
        except Exception:  # an unpicklable result or error
            conn.send((False, RuntimeError(repr(message[1])), None))


class OrderedPool:
    """`imap(tasks)` runs `fn(task)` on `workers` processes and yields the results in task order."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        workers: int,
        initializer: Callable | None = None,
        initargs: tuple = (),
        start_method: str = "spawn",
    ) -> None:
        ctx = multiprocessing.get_context(start_method)
        self._procs: list = []
        self._conns: list = []
        for _ in range(workers):
            parent_end, child_end = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_worker_main, args=(child_end, fn, initializer, initargs), daemon=True)
            proc.start()
            child_end.close()
            self._procs.append(proc)
            self._conns.append(parent_end)

    def _died(self, w: int) -> WorkerDiedError:
        proc = self._procs[w]
        proc.join(timeout=1)
        code = proc.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return WorkerDiedError(f"worker process {proc.pid} died ({how})")

    def imap(self, tasks: Iterable[Any], window: int | None = None) -> Iterator[Any]:
        """Results of `fn` over `tasks`, in order; at most `window` results are held or in flight."""
        window = window or 4 * len(self._procs)
        source = iter(tasks)
        idle = list(range(len(self._procs)))[::-1]
        busy: dict[int, int] = {}  # worker -> sequence number of its task
        done: dict[int, tuple] = {}
        next_seq = next_out = 0
        exhausted = False
        while True:
            while idle and not exhausted and next_seq < next_out + window:
                try:
                    task = next(source)
                except StopIteration:
                    exhausted = True
                    break
                w = idle.pop()
                try:
                    self._conns[w].send(task)
                except OSError:
                    raise self._died(w) from None
                busy[w] = next_seq
                next_seq += 1
            while next_out in done:
                ok, value, hint = done.pop(next_out)
                next_out += 1
                if not ok:
                    if hint is not None and getattr(value, "hint", None) is None:
                        value.hint = hint
                    raise value
                yield value
            if exhausted and not busy and next_out == next_seq:
                return
            if not busy:
                continue
            waiting = {self._conns[w]: w for w in busy}
            sentinels = {self._procs[w].sentinel: w for w in busy}
            for ready in wait([*waiting, *sentinels]):
                if ready in waiting:
                    w = waiting[ready]
                    try:
                        message = ready.recv()
                    except (EOFError, OSError):
                        raise self._died(w) from None
                    done[busy.pop(w)] = message
                    idle.append(w)
                elif sentinels[ready] in busy and not self._conns[sentinels[ready]].poll():
                    raise self._died(sentinels[ready])

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers: politely when they are idle, by SIGTERM after `timeout` otherwise."""
        for conn in self._conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=timeout)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=timeout)
        for conn in self._conns:
            conn.close()

    def terminate(self) -> None:
        """Stop the workers now (after an error or an interrupt)."""
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> "OrderedPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.terminate()
