"""Run the simulated world into Kafka: ``backfill`` (simulated clock, as fast as the
producer allows) or ``realtime`` (a tick a second, the seed generator's behaviour)."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from ridematch_nb.config import PARTITIONS, ParameterError, Settings
from ridematch_nb.contract.events import encode, format_ts, key_of
from ridematch_nb.sim.world import World, WorldParams
from ridematch_nb.stream.kafka_io import BACKFILL_TUNING, Delivery, Publisher, connect_producer
from ridematch_nb.stream.topics import ensure_topic

log = logging.getLogger(__name__)


@dataclass
class WorldEnd:
    """Where a simulation ended, as the summary reports it."""

    seed: int
    t: int
    requests_unfulfilled: int
    params: dict  # the WorldParams, so later stages can rebuild this world
    dispatch: dict  # what nearest-driver dispatch did (sim.DispatchLog)

    @classmethod
    def of(cls, world: World) -> WorldEnd:
        log = world.log
        dispatch = {
            **{k: round(v, 4) for k, v in log.metrics().items()},
            "unfulfilled_by_hour": dict(sorted(log.unfulfilled_by_hour.items())),
            "unfulfilled_by_area": dict(
                sorted(log.unfulfilled_by_area.items(), key=lambda kv: -kv[1])
            ),
        }
        return cls(world.p.seed, world.t, world.requests_unfulfilled, asdict(world.p), dispatch)


@dataclass
class GenerateSummary:
    """What a generator run did; every count comes from the producer's acknowledgements."""

    mode: str
    topic: str
    partitions: int
    seed: int
    sim_start: str
    sim_end: str
    ticks: int
    by_type: dict[str, int]
    sent: int
    delivered: int
    failed: int
    seconds: float
    events_per_s: float
    requests_unfulfilled: int
    requests_fulfilled_share: float  # requests some driver accepted, of all made
    stream_sha256: str  # digest of every (key, value) in order: same seed + params, same digest
    offsets: dict[int, list[int]] = field(default_factory=dict)  # partition -> [first, last]
    errors: list[str] = field(default_factory=list)
    world: dict = field(default_factory=dict)  # the WorldParams of this stream
    dispatch: dict = field(default_factory=dict)  # WorldEnd.dispatch

    def to_dict(self) -> dict:
        return asdict(self)


def _summary(mode, topic, parts, world: WorldEnd, start, ticks, counts, delivery, t0, sha):
    seconds = time.perf_counter() - t0
    return GenerateSummary(
        mode=mode,
        topic=topic,
        partitions=parts,
        seed=world.seed,
        sim_start=format_ts(start),
        sim_end=format_ts(world.t),
        ticks=ticks,
        by_type=dict(sorted(counts.items())),
        sent=delivery.sent,
        delivered=delivery.delivered,
        failed=delivery.failed,
        seconds=round(seconds, 3),
        events_per_s=round(delivery.delivered / max(seconds, 1e-9), 1),
        requests_unfulfilled=world.requests_unfulfilled,
        requests_fulfilled_share=world.dispatch["fulfilled"],
        stream_sha256=sha,
        offsets=dict(sorted(delivery.offsets.items())),
        errors=delivery.errors,
        world=world.params,
        dispatch=world.dispatch,
    )


def _tick(world: World, counts: Counter, digest) -> list[tuple[bytes, bytes]]:
    """One simulated second as (key, value) records, counted and added to the digest."""
    records = []
    for event in world.step():
        key, value = key_of(event), encode(event)
        digest.update(key + b"\0" + value + b"\n")
        records.append((key, value))
        counts[event["event_type"]] += 1
    return records


def _emit(world: World, pub: Publisher, counts: Counter, digest) -> int:
    records = _tick(world, counts, digest)
    for key, value in records:
        pub.send(key, value)
    return len(records)


# The simulation and the JSON encoding run in a child process while this one produces:
# kafka-python's send() alone takes about 18 us a record here, the world and the encoding
# about 11 us, so on one core the two add up. The child sends a minute of records at a time.
SIM_BATCH_TICKS = 60


def _simulate_into(conn, params: WorldParams, ticks: int) -> None:
    """Child process: run the world for ``ticks`` seconds, sending encoded records."""
    try:
        world, counts, digest = World(params), Counter(), hashlib.sha256()
        for first in range(0, ticks, SIM_BATCH_TICKS):
            batch = []
            for _ in range(min(SIM_BATCH_TICKS, ticks - first)):
                batch += _tick(world, counts, digest)
            conn.send(("records", batch))
        conn.send(("end", dict(counts), WorldEnd.of(world), digest.hexdigest()))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _simulator(params: WorldParams, ticks: int):
    """Start the simulating child; returns (process, receiving end of its pipe)."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_simulate_into, args=(send, params, ticks), name="ridematch-sim", daemon=True
    )
    child.start()
    send.close()
    return child, receive


def backfill(
    settings: Settings,
    params: WorldParams,
    hours: float,
    partitions: int = PARTITIONS,
    reset_topic: bool = True,
    topic: str | None = None,
    progress: bool = True,
) -> GenerateSummary:
    """Simulate ``hours`` from ``params.start`` and publish every event.

    ``reset_topic`` recreates the topic first, so the topic holds exactly this history
    (a rerun with the same seed then yields the same topic, not a second copy). What
    consumers derived from the old topic is theirs to forget (``etl.forget``).
    """
    if hours <= 0:
        raise ParameterError(f"parameter hours={hours!r} must be positive")
    topic = topic or settings.topic
    start, ticks = World(params).t, round(hours * 3600)
    child, receive = _simulator(params, ticks)  # forked before any client thread starts
    try:
        pub = Publisher(connect_producer(settings, **BACKFILL_TUNING), topic)
        try:  # the producer is closed whatever fails from here on
            parts = ensure_topic(settings, topic, partitions, reset=reset_topic)
            t0 = time.perf_counter()
            with tqdm(
                total=ticks,
                unit="sim-s",
                desc=f"backfill {hours:g} h",
                disable=not progress,
                mininterval=0.5,
            ) as bar:
                counts, world, sha = _publish_from(receive, pub, bar)
                delivery = pub.flush()
        finally:
            pub.close()
    finally:
        if child.is_alive():
            child.terminate()
        child.join()
    return _summary("backfill", topic, parts, world, start, ticks, counts, delivery, t0, sha)


def _publish_from(receive, pub: Publisher, bar) -> tuple[dict, WorldEnd, str]:
    """Send what the simulating child produces, in its order, until it says it ended;
    returns its counts, where its world ended and its digest of the stream."""
    while True:
        try:
            kind, *payload = receive.recv()
        except EOFError:
            raise RuntimeError("the simulator process ended without finishing") from None
        if kind == "error":
            raise RuntimeError(f"the simulator process failed:\n{payload[0]}")
        if kind == "end":
            return payload[0], payload[1], payload[2]
        send = pub.send
        for key, value in payload[0]:
            send(key, value)
        bar.update(min(SIM_BATCH_TICKS, bar.total - bar.n))
        bar.set_postfix(delivered=pub.delivery.delivered, refresh=False)


def run(
    settings: Settings,
    params: WorldParams,
    mode: str = "backfill",
    hours: float = 24.0,
    seconds: float | None = None,
    partitions: int = PARTITIONS,
    reset_topic: bool = True,
) -> GenerateSummary:
    """The generator in one of its two modes (the notebook's and CLI's entry point)."""
    if mode == "backfill":
        return backfill(settings, params, hours, partitions=partitions, reset_topic=reset_topic)
    if mode == "realtime":
        return realtime(settings, params, seconds=seconds, partitions=partitions)
    raise ParameterError(f"parameter mode={mode!r} must be 'backfill' or 'realtime'")


def progress_line(batch: int, sent_now: int, delivery: Delivery) -> str:
    """The seed generator's progress line."""
    return (
        f"📊 Batch #{batch}: Sent {sent_now} events | Delivered: {delivery.delivered} | "
        f"Total: {delivery.sent} | Pending: {delivery.pending}"
    )


def realtime(
    settings: Settings,
    params: WorldParams,
    seconds: float | None = None,
    partitions: int = PARTITIONS,
    topic: str | None = None,
    say: Callable[[str], None] = print,
    every: int = 10,
) -> GenerateSummary:
    """A tick a second on the wall clock until ``seconds`` pass or Ctrl+C; flushes, then sums up."""
    topic = topic or settings.topic
    say(f"📡 Connecting to Kafka at {settings.kafka_bootstrap}...")
    pub = Publisher(connect_producer(settings), topic)
    try:
        parts = ensure_topic(settings, topic, partitions)
    except BaseException:
        pub.close()
        raise
    say("✅ Connected to Kafka!")
    say(f"📨 Sending events to topic: {topic}")
    say("✅ Generating events... (Ctrl+C to stop)")
    start = int(time.time())
    world, counts, digest = World(params, start_epoch=start), Counter(), hashlib.sha256()
    t0, ticks = time.perf_counter(), 0
    try:
        while seconds is None or ticks < seconds:
            sent_now = _emit(world, pub, counts, digest)
            ticks += 1
            if ticks % every == 0:
                say(progress_line(ticks, sent_now, pub.delivery))
            time.sleep(max(0.0, start + ticks - time.time()))
    except KeyboardInterrupt:
        say("\n🛑 Stopping: flushing what is pending...")
    finally:
        delivery = pub.flush()
        pub.close()
    end = WorldEnd.of(world)
    sha = digest.hexdigest()
    summary = _summary("realtime", topic, parts, end, start, ticks, counts, delivery, t0, sha)
    say(
        f"✅ Done: {summary.delivered} delivered, {summary.failed} failed, "
        f"by type {summary.by_type}"
    )
    return summary
