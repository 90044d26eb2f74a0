"""A child process's life tied to its parent's: what the ETL's writer process and the
live notebook's background commands share, so neither outlives a parent that dies."""

from __future__ import annotations

import contextlib
import os
import signal


def die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when ``parent`` dies, even by SIGKILL
    (``PR_SET_PDEATHSIG``; it fires when the parent's *thread* that started us ends)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
