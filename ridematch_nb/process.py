"""Processes: a child's life tied to its parent's (what the ETL's writer process and the
live notebook's background commands share, so neither outlives a parent that dies), a
process started again with variables in its environment (the package reads the
environment; it never writes it), and a server of ours started and waited for until it
answers (the bench's targets, notebook 06's service, the tests' servers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping

STARTED_AGAIN = "RIDEMATCH_STARTED_AGAIN"  # set in the one restart, so there is only one


def start_again_with(wanted: Mapping[str, str]) -> None:
    """Return at once when the environment holds ``wanted``; else replace this process
    with the same command line (``sys.orig_argv``: a script or ``-m``, as it was
    started) and ``wanted`` in its environment, as a shell that exported them would
    have started it. Once only: a second time without them is an error."""
    if all(os.environ.get(k) == v for k, v in wanted.items()):
        return
    if os.environ.get(STARTED_AGAIN):
        raise SystemExit(f"started again with {sorted(wanted)} and still without them")
    env = {**os.environ, **wanted, STARTED_AGAIN: "1"}
    os.execve(sys.executable, sys.orig_argv, env)


def die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when ``parent`` dies, even by SIGKILL
    (``PR_SET_PDEATHSIG``; it fires when the parent's *thread* that started us ends)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


class ChildExited(RuntimeError):
    """The server we started stopped before it answered; the message ends with its output."""


def wait_until_answering(
    answering: Callable[[], bool],
    exit_code: Callable[[], int | None],
    what: str,
    output: Callable[[], str],
    timeout_s: float = 120.0,
) -> None:
    """Return once ``answering()`` (which swallows its own connection errors) is true:
    the server ``what`` that we started serves. ``ChildExited`` with the last of its
    ``output()`` when ``exit_code()`` says it stopped first (a port taken, a missing
    model), a RuntimeError when it did not answer in ``timeout_s``. The bench, the
    notebook's client and the tests start servers so."""
    deadline = time.monotonic() + timeout_s
    while not answering():
        code = exit_code()
        if code is not None:
            raise ChildExited(f"{what} exited {code}: {output()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer in {timeout_s:g} s")
        time.sleep(0.3)


@contextlib.contextmanager
def started_server(
    args: list[str],
    ready_url: str,
    method: str = "get",
    body: dict | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
) -> Iterator[int]:
    """``python -m ridematch_nb ARGS`` (``env`` added to this environment) until the block
    ends, entered once ``ready_url`` answers 200 to ``method`` with ``body``; yields its
    pid. Its output goes to a file (a pipe nobody reads would fill and stall it), the
    last of which ``ChildExited`` carries."""
    import httpx

    from ridematch_nb.config import PROJECT_ROOT

    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ridematch_nb", *args],
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=log,
            env={**os.environ, **(env or {})},
        )

        def answering() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return httpx.request(method, ready_url, json=body, timeout=5).status_code == 200
            return False

        def output() -> str:
            log.seek(0)
            return log.read()[-2000:]

        try:
            what = f"{args[0]} at {ready_url}"
            wait_until_answering(answering, proc.poll, what, output, timeout_s)
            yield proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=30)
