"""The ETL's writer: decodes records, cuts them into chunks and writes each chunk's
files, in a child process of the ETL worker.

Why a process: kafka-python unpacks every record in Python, and that alone holds the
GIL for about half of what the worker does (measured with py-spy). Decoding, parquet
encoding and the S3 client's request handling took the other half, in the same
interpreter. In a child process they run on the other core, so the consumer keeps
fetching while the previous records are decoded and written.

The worker (``etl.ETL``) keeps everything the promises rest on: the group membership,
the offsets it has taken, every commit, and the clean-up of uncommitted chunks. The
writer only answers requests, in order, one at a time:

    take(partition, values, keys, timestamps, offsets)  -> written chunks, if any filled
    drop(partition)                                     -> records it held, now forgotten
    flush()                                             -> every held chunk, written
    sync()                                              -> every upload before it, done
    delete(keys)                                        -> a committed chunk's manifest

A chunk is written manifest first, then its objects (each PUT durable on return); the
worker commits its offsets when it hears of it, then asks for the manifest's deletion.
The writer dies with the worker (``PR_SET_PDEATHSIG``), so no orphan keeps uploading
while the next worker cleans up after a crash.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import traceback
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from ridematch_nb.config import Settings
from ridematch_nb.contract.columnar import REJECTED_SCHEMA
from ridematch_nb.contract.decoder import decode_batch
from ridematch_nb.lake.chunking import Chunk, Chunker, Records
from ridematch_nb.lake.storage import Lake, chunk_name, data_key, pending_key, rejected_key
from ridematch_nb.process import die_with_parent

log = logging.getLogger(__name__)

OUTBOX = 8  # requests queued for the writer (each one poll of one partition)
MAX_UPLOADS = 2  # full chunks waiting for the upload thread


class ChunkWriter:
    """The writer process's state: the chunking policy, and the chunks' files in the lake."""

    def __init__(
        self, settings: Settings, prefix: str, topic: str, roll_records: int, roll_event_s: float
    ) -> None:
        self.lake = Lake(settings)
        self.prefix, self.topic = prefix, topic
        self.chunker = Chunker(roll_records, roll_event_s)

    def take(self, partition: int, values: list, keys: list, timestamps: list, offsets) -> list:
        """Decode one poll's records of a partition; returns the chunks that filled."""
        records = Records(partition, offsets, keys, timestamps, values, decode_batch(values))
        return self.chunker.take(records)

    def drop(self, partition: int) -> int:
        return self.chunker.drop(partition)

    def flush(self) -> list:
        return self.chunker.flush()

    def write(self, chunk: Chunk) -> dict:
        """The manifest, then every object of the chunk; returns what the worker commits."""
        stem = chunk_name(self.topic, chunk.partition, chunk.first, chunk.last)
        tables = chunk.files()
        files = {
            data_key(self.prefix, etype, date, hour, stem): table
            for (etype, date, hour), table in sorted(tables.items())
        }
        if chunk.rejected:
            files[rejected_key(self.prefix, stem)] = pa.Table.from_pylist(
                chunk.rejected, schema=REJECTED_SCHEMA
            )
        manifest = pending_key(self.prefix, self.topic, chunk.partition, chunk.first, chunk.last)
        self.lake.put_json(manifest, {"keys": sorted(files)})
        for key, table in files.items():
            self.lake.put_table(key, table)
        landed: Counter = Counter()
        for (etype, _, _), table in tables.items():
            landed[etype] += table.num_rows
        return {
            "partition": chunk.partition,
            "first": chunk.first,
            "last": chunk.last,
            "count": chunk.count,
            "manifest": manifest,
            "landed": dict(landed),
            "rejected": dict(Counter(r["reason"] for r in chunk.rejected)),
            "files": len(files),
        }


def _error_reply(exc: BaseException) -> tuple:
    try:
        pickle.dumps(exc)
    except Exception:
        exc = RuntimeError(f"the ETL writer failed:\n{traceback.format_exc()}")
    return ("error", exc)


class _Replies:
    """Replies to the worker from two threads (the request loop, the upload thread)."""

    def __init__(self, conn) -> None:
        self.conn, self.lock, self.failed = conn, threading.Lock(), False

    def send(self, reply: tuple) -> None:
        with self.lock:
            self.conn.send(reply)


def _serve(requests, replies, parent: int, args: tuple) -> None:
    """The writer process: answer requests in order. Chunk uploads run on one thread of
    their own, in order, so the next records decode while S3 answers; each upload sends
    its own "written" reply, and "flushed" / "synced" wait for every upload before them."""
    die_with_parent(parent)
    # Ctrl+C and SIGTERM are for the worker, which finishes cleanly with our help.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = _Replies(replies)
    writer = ChunkWriter(*args)
    uploads = ThreadPoolExecutor(max_workers=1)
    pending: deque = deque()

    def upload(chunk: Chunk) -> None:
        if out.failed:
            return  # an earlier upload failed: nothing after it may be written
        try:
            out.send(("written", writer.write(chunk)))
        except BaseException as exc:
            out.failed = True
            out.send(_error_reply(exc))

    def settle(keep: int) -> None:
        while len(pending) > keep:
            pending.popleft().result()

    while not out.failed:
        try:
            kind, *params = requests.recv()
        except EOFError:
            return
        try:
            if kind == "take":
                for chunk in writer.take(*params):
                    pending.append(uploads.submit(upload, chunk))
                settle(keep=MAX_UPLOADS)  # bounded: chunks waiting hold memory
            elif kind == "drop":
                out.send(("dropped", writer.drop(*params)))
            elif kind in ("flush", "sync"):
                for chunk in writer.flush() if kind == "flush" else []:
                    pending.append(uploads.submit(upload, chunk))
                settle(keep=0)
                if not out.failed:
                    out.send(("flushed",) if kind == "flush" else ("synced",))
            elif kind == "delete":
                writer.lake.delete(params[0])
            else:  # "stop"
                settle(keep=0)
                return
        except BaseException as exc:
            out.failed = True
            out.send(_error_reply(exc))
    settle(keep=0)


class WriterProcess:
    """The worker's handle on its writer process: requests go out in order, replies come
    back through a reader thread (so neither side can block the other on a full pipe)."""

    def __init__(
        self, settings: Settings, prefix: str, topic: str, roll_records: int, roll_event_s: float
    ) -> None:
        # Forked before the worker's Kafka client starts its threads. Not spawned: spawn
        # re-imports the caller's main module, which breaks every script without an
        # ``if __name__ == "__main__"`` guard. The fork keeps copies of this process's
        # sockets open until the writer ends (with the worker).
        ctx = multiprocessing.get_context("fork")
        requests_in, self._requests = ctx.Pipe(duplex=False)
        replies, replies_out = ctx.Pipe(duplex=False)
        args = (settings, prefix, topic, roll_records, roll_event_s)
        self.process = ctx.Process(
            target=_serve,
            args=(requests_in, replies_out, os.getpid(), args),
            name="etl-writer",
            daemon=True,
        )
        self.process.start()
        requests_in.close()
        replies_out.close()
        self.replies: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(replies,), daemon=True)
        self._reader.start()
        # Requests wait here while the writer is busy, so the consumer keeps fetching;
        # bounded, so a writer that falls behind slows the consumer instead of filling memory.
        self._outbox: queue.Queue = queue.Queue(maxsize=OUTBOX)
        self._sender = threading.Thread(target=self._send_all, daemon=True)
        self._sender.start()
        self._broken = False

    def _read(self, conn) -> None:
        while True:
            try:
                self.replies.put(conn.recv())
            except (EOFError, OSError):
                self.replies.put(("died",))
                return

    def died(self) -> BaseException:
        """Why the writer is gone: the error it reported, if it did, else its death."""
        self.process.join(timeout=5)
        self._reader.join(timeout=5)  # it ends at the pipe's end, after the last reply
        while True:
            try:
                reply = self.replies.get_nowait()
            except queue.Empty:
                break
            if reply[0] == "error":
                return reply[1]
        return RuntimeError(
            f"the ETL writer process ended unexpectedly (exit code {self.process.exitcode}); "
            "nothing it had not written was committed, so a rerun continues from there"
        )

    def _send_all(self) -> None:
        while True:
            request = self._outbox.get()
            if request is None:
                return
            try:
                self._requests.send(request)
            except OSError:  # BrokenPipeError: the writer is gone; the reader reports it
                self._broken = True
                return

    def send(self, *request) -> None:
        """Queue a request for the writer (blocks while the queue is full)."""
        while not self._broken:
            try:
                self._outbox.put(request, timeout=1.0)
                return
            except queue.Full:
                if not self.process.is_alive():
                    break
        raise self.died()

    def close(self) -> None:
        if not self._broken and self.process.is_alive():
            with contextlib.suppress(queue.Full):
                self._outbox.put(("stop",), timeout=5)
        with contextlib.suppress(queue.Full):
            self._outbox.put_nowait(None)
        self._sender.join(timeout=30)
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        self._requests.close()
