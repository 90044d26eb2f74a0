"""The event stages next to their clients' raw limits: the generator against
kafka-python sending the same records pre-serialized; the ETL against the same consumer
fetching without parsing, and against the naive path (json.loads per message into
pandas)."""

from __future__ import annotations

import json
import logging
import statistics
import time
import uuid
from collections.abc import Callable
from functools import partial

from ridematch_nb.bench.harness import delete_topics, isolated, median
from ridematch_nb.config import Settings
from ridematch_nb.contract.events import encode, key_of
from ridematch_nb.lake import etl
from ridematch_nb.sim.world import WorldParams, simulate
from ridematch_nb.stream import kafka_io, topics
from ridematch_nb.stream.generate import backfill
from ridematch_nb.stream.kafka_io import Publisher, connect_producer
from ridematch_nb.stream.topics import ensure_topic

log = logging.getLogger(__name__)

PARTITIONS = 6
EVENTS_PER_SIM_HOUR = 10.6 * 3600  # ~10 driver updates + requests + outcomes per tick
PAIRS = [("generate", "produce_raw"), ("etl", "consume_raw"), ("etl", "naive")]


def _world(seed: int) -> WorldParams:
    return WorldParams(seed=seed, n_drivers=1000, n_riders=5000)


def _hours_for(n: int) -> float:
    return max(n / EVENTS_PER_SIM_HOUR, 1 / 60)


def produce_raw(settings: Settings, topic: str, n: int) -> dict:
    """The producer alone: the generator's first ``n`` records, encoded before the clock
    starts, sent and confirmed."""
    records = [(key_of(e), encode(e)) for e in simulate(_world(1), _hours_for(n))][:n]
    ensure_topic(settings, topic, PARTITIONS)
    pub = Publisher(connect_producer(settings), topic)
    t0 = time.perf_counter()
    for key, value in records:
        pub.send(key, value)
    delivery = pub.flush()
    seconds = time.perf_counter() - t0
    pub.close()
    return {"rate": delivery.delivered / seconds, "n": delivery.delivered}


def generate(settings: Settings, topic: str, hours: float) -> dict:
    summary = backfill(
        settings,
        _world(1),
        hours,
        partitions=PARTITIONS,
        topic=topic,
        progress=False,
        reset_topic=False,
    )
    return {"rate": summary.delivered / summary.seconds, "n": summary.delivered}


def _drain(settings: Settings, topic: str, n: int, take: Callable[[list], None]) -> dict:
    """Read ``n`` records with the pipeline's fetch settings, handing each partition's
    batch to ``take``; the rate runs from the first records to the last."""
    consumer, tps = topics.reader(settings, topic)
    consumer.seek_to_beginning(*tps)
    got, t0, deadline = 0, None, time.monotonic() + 60
    try:
        for batch in kafka_io.polls(consumer, settings):
            if got >= n:
                break
            if batch and t0 is None:
                t0 = time.perf_counter()
            if batch:
                deadline = time.monotonic() + 60
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: read {got:,} of {n:,} records, then nothing for 60 s")
            for records in batch.values():
                take(records)
                got += len(records)
        seconds = time.perf_counter() - t0
    finally:
        consumer.close()
    return {"rate": got / seconds, "n": got}


def consume_raw(settings: Settings, topic: str, n: int) -> dict:
    """The consumer alone: n records fetched, nothing parsed."""
    return _drain(settings, topic, n, lambda records: None)


def naive(settings: Settings, topic: str, n: int) -> dict:
    """The obvious path: json.loads per message, then one pandas frame per event type."""
    import pandas as pd

    rows: dict[str, list] = {}
    unreadable = 0

    def take(records: list) -> None:
        nonlocal unreadable
        for record in records:
            try:  # naive, but not fragile: a value it cannot read is counted, not fatal
                event = json.loads(record.value)
                rows.setdefault(event["event_type"], []).append(event)
            except Exception:
                unreadable += 1

    result = _drain(settings, topic, n, take)
    t0 = time.perf_counter()
    frames = {etype: pd.DataFrame(items) for etype, items in rows.items()}
    # the frames are part of the work: add their time at the same rate definition
    seconds = result["n"] / result["rate"] + time.perf_counter() - t0
    assert sum(len(f) for f in frames.values()) + unreadable == result["n"]
    return {"rate": result["n"] / seconds, "n": result["n"], "unreadable": unreadable}


def etl_stage(settings: Settings, topic: str, n: int, prefix: str) -> dict:
    """The ETL, one worker of a fresh group; the group join is reported apart."""
    summary = etl.run(
        settings,
        group=f"bench-{uuid.uuid4().hex[:6]}",
        prefix=prefix,
        topic=topic,
        max_records=n,
        progress=False,
    )
    working = summary.seconds - summary.first_records_s
    return {
        "rate": summary.consumed / working,
        "n": summary.consumed,
        "join_s": summary.first_records_s,
        "with_join_rate": summary.consumed / summary.seconds,
    }


def bench_size(settings: Settings, n: int, repeat: int, tag: str, say) -> dict:
    """Every event stage at one size, each the median of ``repeat`` runs, interleaved
    with its limit so both see the same machine."""
    hours = _hours_for(n)
    made: list[str] = []

    def topic() -> str:
        made.append(f"bench-{tag}-{n}-{len(made)}")
        return made[-1]

    runs: dict[str, list[dict]] = {s: [] for s in ("produce_raw", "generate")}
    for i in range(repeat):
        say(f"  {n:,} events, run {i + 1}/{repeat}: produce_raw, generate")
        raw_topic, gen_topic = topic(), topic()  # named here: the children cannot tell us
        runs["produce_raw"].append(isolated(partial(produce_raw, settings, raw_topic, n)))
        runs["generate"].append(isolated(partial(generate, settings, gen_topic, hours)))
    events = runs["generate"][-1]["n"]
    source = made[-1]
    runs.update(consume_raw=[], naive=[], etl=[])
    prefix = f"bench/{tag}"
    for i in range(repeat):
        say(f"  {n:,} events, run {i + 1}/{repeat}: consume_raw, naive, etl")
        runs["consume_raw"].append(isolated(partial(consume_raw, settings, source, events)))
        runs["naive"].append(isolated(partial(naive, settings, source, events)))
        sub = f"{prefix}/{n}-{i}"
        runs["etl"].append(isolated(partial(etl_stage, settings, source, events, sub)))
    delete_topics(settings, made)
    row = {"events": events, **{stage: median(r) for stage, r in runs.items()}}
    row["etl"]["join_s"] = statistics.median(r["join_s"] for r in runs["etl"])
    row["etl"]["with_join_median"] = round(
        statistics.median(r["with_join_rate"] for r in runs["etl"]), 1
    )
    for stage, limit in PAIRS:
        row[f"{stage}_vs_{limit}"] = round(row[stage]["median"] / row[limit]["median"], 3)
    return row
