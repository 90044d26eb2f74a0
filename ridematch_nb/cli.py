"""`python -m ridematch_nb ...`: the command line for the stack and the pipeline stages."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from ridematch_nb import quiet_third_party_warnings
from ridematch_nb.config import (
    ETL_GROUP,
    PARTITIONS,
    PUSH_GROUP,
    ROLL_EVENT_S,
    ROLL_RECORDS,
    ConfigError,
    ParameterError,
    load_settings,
    resolve_path,
)
from ridematch_nb.stream.group_timing import OTHER_CLIENTS_GROUP_SETTINGS

# check-events reads each partition itself; a client that joins a consumer group instead
# (the original project's check_kafka_events.py) needs the settings below on this broker.
CHECK_EVENTS_EPILOG = f"""\
Reads every partition directly, outside any consumer group, so it answers at once.

Another client in a consumer group (such as the original project's check_kafka_events.py,
confluent-kafka with poll(timeout=5.0)): the embedded broker answers a group join only
after half the session timeout, so with librdkafka's default session.timeout.ms (45000)
the first records come after ~23 s and a 5 s poll returns nothing. Give the consumer

    {", ".join(f"'{k}': {v}" for k, v in OTHER_CLIENTS_GROUP_SETTINGS.items())}

and its first records come after ~1 s (docs/troubleshooting.md)."""


def _cmd_stack(args: argparse.Namespace) -> int:
    from ridematch_nb.stack.control import LocalStack

    stack = LocalStack(load_settings(args.params))
    if args.action == "up":
        statuses = stack.up()
        for st in statuses:
            print(st.line())
        print(f"stack is up; data in {stack.dir}")
        return 0
    if args.action == "down":
        stopped = stack.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    statuses = stack.status()
    for st in statuses:
        print(st.line())
    healthy = all(s.healthy for s in statuses)
    if not healthy:
        print("not all services are healthy: run `make stack-up`")
    return 0 if healthy else 1


def _settings(args: argparse.Namespace):
    """Settings for a command; with the embedded stack, its generated S3 keys too."""
    settings = load_settings(args.params)
    if settings.stack is not None and settings.secrets_file and settings.secrets_file.exists():
        from ridematch_nb.stack.services import ensure_secrets

        settings = ensure_secrets(settings)
    return settings


def _cmd_generate(args: argparse.Namespace) -> int:
    from ridematch_nb.sim.world import WorldParams
    from ridematch_nb.stream import generate

    print("🚀 Starting RideMatch data generator...")
    world = WorldParams(
        seed=args.seed,
        n_drivers=args.drivers,
        n_riders=args.riders,
        start=args.start,
        driver_updates_per_tick=args.updates_per_tick,
        request_rate=args.request_rate,
    )
    summary = generate.run(
        _settings(args),
        world,
        mode=args.mode,
        hours=args.hours,
        seconds=args.seconds,
        partitions=args.partitions,
        reset_topic=not args.keep_topic,
    )
    if args.mode == "backfill" and not args.keep_topic:
        from ridematch_nb.lake import etl

        removed = etl.forget(_settings(args), summary.topic, summary.partitions)
        print(f"🧹 The ETL forgot the old topic: {removed} files removed, offsets reset")
    if args.mode == "backfill":
        print(
            f"✅ Backfill: {summary.delivered} events delivered in {summary.seconds:.1f} s "
            f"({summary.events_per_s:,.0f} events/s); by type {summary.by_type}"
        )
    return 0 if summary.failed == 0 else 1


def _cmd_check_events(args: argparse.Namespace) -> int:
    from ridematch_nb.stream.topics import latest_records, pretty

    settings = _settings(args)
    records = latest_records(settings, settings.topic, args.n)
    print(
        f"Latest {len(records)} event(s) in topic {settings.topic} at {settings.kafka_bootstrap}:"
    )
    for record in records:
        print(pretty(record))
    if not records:
        print("no events: run the generator (python -m ridematch_nb generate)")
    return 0


def _cmd_etl(args: argparse.Namespace) -> int:
    from ridematch_nb.lake import etl

    summary = etl.run(
        _settings(args),
        mode=args.mode,
        group=args.group,
        prefix=args.prefix or None,
        idle_s=args.idle_s,
        max_records=args.max_records or None,
        roll_records=args.roll_records,
        roll_event_s=args.roll_event_s,
    )
    print(
        f"consumed {summary.consumed} = landed {sum(summary.landed.values())} "
        f"{summary.landed} + rejected {sum(summary.rejected.values())} {summary.rejected}"
    )
    print(
        f"{summary.files_written} files in {summary.chunks} chunks, {summary.seconds:.1f} s "
        f"({summary.events_per_s:,.0f} events/s); partitions {summary.partitions}; "
        f"lag {summary.lag}"
    )
    return 0


def _cmd_verify_online(args: argparse.Namespace) -> int:
    from ridematch_nb.features import store as features
    from ridematch_nb.features.redis_io import check_redis

    settings = _settings(args)
    fs = features.store(settings)
    check_redis(settings)
    ids = args.drivers or [f"driver_{i}" for i in range(args.n)]
    table = features.online(fs, ids)
    print(f"Online features ({features.FEATURE_SERVICE}) from {settings.redis_address}:")
    print(table.to_string(index=False))
    missing = table[features.STORE_FEATURES].isna().all(axis=1).sum()
    if missing:
        print(f"{missing} driver(s) have no online values: materialize first (notebook 04)")
    return 0


def _cmd_push_online(args: argparse.Namespace) -> int:
    from ridematch_nb.features import online
    from ridematch_nb.features import store as features

    settings = _settings(args)
    fs = features.store(settings)
    print(
        f"pushing the newest driver state from {settings.topic} into {settings.redis_address} "
        "(Ctrl+C to stop)"
        if args.mode == "follow"
        else "pushing until caught up"
    )
    counts = online.stream_to_online(
        settings, fs, mode=args.mode, group=args.group, from_beginning=args.from_beginning
    )
    print(
        f"read {counts['read']}, pushed {counts['pushed']} driver states, "
        f"skipped {counts['skipped']} invalid {counts['rejected'] or ''}"
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from ridematch_nb.model import server

    run = resolve_path(args.run) if args.run else None
    server.serve(_settings(args), run, args.host, args.port, args.workers)
    return 0


def _cmd_feast(args: argparse.Namespace) -> int:
    from ridematch_nb.features import store as features

    return features.run_feast_cli(_settings(args), args.feast_args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from ridematch_nb.bench.command import run

    return run(args, _settings)


def _cmd_run(args: argparse.Namespace) -> int:
    from ridematch_nb.pipeline import ChainError, run_chain, summary_text

    try:
        result = run_chain(args.params or "params/local.yaml", only=args.only)
    except ChainError as exc:
        print(f"\n✗ {exc}", file=sys.stderr)
        return 1
    print("\n" + summary_text(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ridematch_nb.sim.world import WorldParams

    parser = argparse.ArgumentParser(prog="python -m ridematch_nb", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # the live notebook's background commands: tied to the kernel (ridematch_nb.views.live)
    parser.add_argument("--tied-to", type=int, metavar="PID", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    # the option every command takes, defined once
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--params",
        default=None,
        help="params file (default $RIDEMATCH_PARAMS or params/local.yaml)",
    )

    p = sub.add_parser(
        "stack", help="start, stop or check the embedded local stack", parents=[common]
    )
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(func=_cmd_stack)

    world = WorldParams()  # the simulator's own defaults are the command's
    p = sub.add_parser(
        "generate", help="simulate the marketplace and publish events to Kafka", parents=[common]
    )
    p.add_argument(
        "--mode",
        choices=["realtime", "backfill"],
        default="realtime",
        help="realtime: a tick a second until Ctrl+C (default); backfill: simulated clock",
    )
    p.add_argument("--seconds", type=float, default=None, help="realtime: stop after this long")
    p.add_argument("--hours", type=float, default=24.0, help="backfill: simulated hours")
    p.add_argument("--seed", type=int, default=world.seed)
    p.add_argument("--drivers", type=int, default=world.n_drivers)
    p.add_argument("--riders", type=int, default=world.n_riders)
    p.add_argument("--start", default=world.start, help="backfill: first simulated second (UTC)")
    p.add_argument("--updates-per-tick", type=float, default=world.driver_updates_per_tick)
    p.add_argument(
        "--request-rate", type=float, default=world.request_rate, help="mean requests per tick"
    )
    p.add_argument("--partitions", type=int, default=PARTITIONS)
    p.add_argument(
        "--keep-topic", action="store_true", help="backfill: append instead of recreating the topic"
    )
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser(
        "check-events",
        help="print the latest N events of the topic",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=CHECK_EVENTS_EPILOG,
    )
    p.add_argument("n", nargs="?", type=int, default=10)
    p.set_defaults(func=_cmd_check_events)

    p = sub.add_parser(
        "etl", help="Kafka -> validated parquet in S3 (one worker of the group)", parents=[common]
    )
    p.add_argument(
        "--mode",
        choices=["drain", "follow"],
        default="drain",
        help="drain: stop when caught up and idle (default); follow: until Ctrl+C",
    )
    p.add_argument("--group", default=ETL_GROUP, help="consumer group")
    p.add_argument(
        "--prefix",
        default="",
        help="dataset root inside the bucket (default: the profile's services.prefix)",
    )
    p.add_argument("--idle-s", type=float, default=5.0, help="drain: quiet seconds before stopping")
    p.add_argument("--max-records", type=int, default=0, help="stop after this many (0: no bound)")
    p.add_argument("--roll-records", type=int, default=ROLL_RECORDS, help="records per file chunk")
    p.add_argument(
        "--roll-event-s",
        type=float,
        default=ROLL_EVENT_S,
        help="event-time window (aligned to the clock) that closes a chunk",
    )
    p.set_defaults(func=_cmd_etl)

    p = sub.add_parser(
        "verify-online", help="print online feature values for a few drivers", parents=[common]
    )
    p.add_argument("--n", type=int, default=5, help="driver_0 .. driver_{n-1}")
    p.add_argument("--drivers", nargs="+", default=None, help="explicit driver ids")
    p.set_defaults(func=_cmd_verify_online)

    p = sub.add_parser(
        "push-online", help="stream the newest driver state into Redis", parents=[common]
    )
    p.add_argument("--mode", choices=["follow", "drain"], default="follow")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="a new group starts at the topic's start (default: its end)",
    )
    p.add_argument("--group", default=PUSH_GROUP, help="consumer group")
    p.set_defaults(func=_cmd_push_online)

    p = sub.add_parser("serve", help="serve the match over HTTP (POST /match)", parents=[common])
    p.add_argument("--host", help="address to listen on (default: services.match_url's)")
    p.add_argument("--port", type=int, help="port (default: services.match_url's, 18000)")
    p.add_argument("--run", default=None, help="run folder whose model to serve (default: newest)")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "feast",
        help="the feast CLI in feature_repo/ with this profile (feast plan, serve, ui, ...)",
        parents=[common],
    )
    p.add_argument("feast_args", nargs=argparse.REMAINDER, help="what to pass to feast")
    p.set_defaults(func=_cmd_feast)

    from ridematch_nb.bench.command import add_parser as add_bench_parser

    add_bench_parser(sub, common).set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "run", help="run the notebook chain into outputs/runs/<run-id>/", parents=[common]
    )
    p.add_argument("--only", nargs="+", default=None, help="notebook names or numbers, e.g. 01 02")
    p.set_defaults(func=_cmd_run)
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    """Errors whose message says what is wrong and how to fix it: shown alone, exit 2.
    (Imported here, not at the top: `--help` should not wait for pandas.)"""
    from ridematch_nb.features.redis_io import RedisUnavailable
    from ridematch_nb.lake.storage import S3Unavailable
    from ridematch_nb.stack.control import StackError
    from ridematch_nb.stream.kafka_io import KafkaUnavailable, TopicResetError

    return (
        ConfigError,
        ParameterError,
        StackError,
        KafkaUnavailable,
        TopicResetError,
        S3Unavailable,
        RedisUnavailable,
    )


def tie_to(parent: int) -> None:
    """A background command of the live notebook: it dies with the kernel, and Ctrl+C and
    Kernel > Interrupt stop it cleanly even when it was started while the kernel ignored
    SIGINT (between cells), which a child inherits."""
    from ridematch_nb.process import die_with_parent

    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    quiet_third_party_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tied_to is not None:
        tie_to(args.tied_to)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "botocore", "urllib3", "s3fs", "aiobotocore", "papermill", "feast"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.CRITICAL)
    try:
        return args.func(args)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    # anything else is a bug or a surprise: Python's traceback says where it happened


if __name__ == "__main__":
    raise SystemExit(main())
