"""How the benchmarks measure: each measurement in a forked child whose peak memory is
sampled, medians over repetitions, and the clean-up of what a run made."""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import statistics
import threading
import time
import traceback
from collections.abc import Callable

from kafka.errors import UnknownTopicOrPartitionError

from ridematch_nb.config import Settings
from ridematch_nb.stream.topics import admin_client

log = logging.getLogger(__name__)


def _memory_tree(proc) -> int:
    """Proportional set size (PSS) of a process and its children: a forked child shares
    its parent's pages, and PSS counts each shared page once across the tree, where
    adding up RSS would count it in every process."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(Exception):  # a child that just ended holds nothing
            total += p.memory_full_info().pss
    return total


def _child(conn, fn: Callable[[], dict]) -> None:
    import psutil

    gc.freeze()  # what the child inherited stays shared: the collector never touches it
    proc = psutil.Process()
    start = peak = _memory_tree(proc)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, _memory_tree(proc))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
        done.set()
        sampler.join()
        peak = max(peak, _memory_tree(proc))
        conn.send({**result, "peak_mib": round((peak - start) / 2**20, 1)})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def isolated(fn: Callable[[], dict]) -> dict:
    """Run ``fn`` in a forked child; its result plus ``peak_mib``, the child's (and its
    children's) peak memory (PSS) above what it started with."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, fn), daemon=False)
    child.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = {"error": f"the measuring process died (exit code {child.exitcode})"}
    child.join()
    if "error" in result:
        raise RuntimeError(f"benchmark stage failed:\n{result['error']}")
    return result


def median(results: list[dict], key: str = "rate") -> dict:
    rates = [r[key] for r in results]
    return {
        "median": round(statistics.median(rates), 1),
        "runs": [round(r, 1) for r in rates],
        "peak_mib": max(r["peak_mib"] for r in results),
    }


def delete_topics(settings: Settings, topics: list[str]) -> None:
    """Bench topics go: every extra topic slows every producer a little (kafka-python
    rebuilds the set of known topics on each send)."""
    admin = admin_client(settings)
    try:
        for name in topics:
            with contextlib.suppress(UnknownTopicOrPartitionError):
                admin.delete_topics([name])
        deadline = time.monotonic() + 15
        while set(topics) & set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = set(topics) & set(admin.list_topics())
        if left:
            log.warning("bench topics still listed after deletion: %s", sorted(left))
    finally:
        admin.close()


def delete_landed(settings: Settings, prefix: str) -> int:
    from ridematch_nb.lake.storage import Lake

    lake = Lake(settings)
    keys = lake.keys(f"{prefix}/")
    lake.delete(keys)
    return len(keys)
