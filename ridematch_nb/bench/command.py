"""The ``bench`` command line: its options (one of the event/online stages, ``--offline``,
``--dispatch``, ``--join`` or ``--serve``) and which bench they run; the benches import
only when run."""

from __future__ import annotations

import argparse

from ridematch_nb.config import ParameterError, resolve_path


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``bench`` subcommand with its options, on the CLI's subparsers."""
    p = sub.add_parser(
        "bench", help="each stage's rate next to its client's raw limit", parents=[common]
    )
    p.add_argument("--sizes", type=int, nargs="*", default=[50_000, 200_000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--online",
        action="store_true",
        help="also materialize, online lookups, freshness and the whole match (after make demo)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="instead: the training set from Feast's offline store against pyarrow + "
        "merge_asof on the same lake, and materialization (after make demo)",
    )
    p.add_argument(
        "--compare",
        nargs="*",
        default=[],
        choices=["duckdb", "dask"],
        help="with --offline: also Feast's own duckdb / dask store, once each",
    )
    p.add_argument(
        "--scale",
        metavar="PARAMS",
        help="with --offline: also measure another profile's lake (e.g. params/week.yaml), "
        "interleaved, and how the figures grew",
    )
    p.add_argument(
        "--dispatch",
        action="store_true",
        help="instead: replay a run's held-out period under each dispatch policy (after "
        "make demo), with more seeds and a longer window than notebook 07",
    )
    p.add_argument(
        "--join",
        action="store_true",
        help="instead: how long each consumer waits for its first records (group joins on "
        "the embedded broker), ours and the original project's (confluent-kafka)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="instead: the match service under open-loop load (k6) beside feast serve and "
        "the in-process Matcher (after make demo)",
    )
    p.add_argument(
        "--rates", type=int, nargs="*", default=[50, 100, 200, 400], help="with --serve: requests/s"
    )
    p.add_argument("--duration", type=int, default=30, help="with --serve: seconds per rate")
    p.add_argument("--run", help="with --dispatch or --serve: the run folder (default: newest)")
    p.add_argument("--seeds", type=int, default=10, help="with --dispatch: seeds")
    p.add_argument(
        "--window-hours",
        type=float,
        default=0.0,
        help="with --dispatch: hours replayed from the training cut (0: to the end)",
    )
    return p


def run(args: argparse.Namespace, settings_for) -> int:
    """Run the bench ``args`` ask for; ``settings_for(args)`` gives a command's settings."""
    if args.scale and not args.offline:
        raise ParameterError("parameter --scale goes with --offline")
    if args.serve:
        from ridematch_nb.bench.serve import run_serve_bench

        run = resolve_path(args.run) if args.run else None
        results = run_serve_bench(settings_for(args), run, args.rates, args.duration, args.repeat)
        print(f"results: {results['path']}")
        return 0
    if args.join:
        from ridematch_nb.bench.join import run_join_bench

        results = run_join_bench(settings_for(args), repeat=args.repeat)
        print(f"results: {results['path']}")
        return 0
    if args.dispatch:
        from ridematch_nb.bench.dispatch import run_dispatch_bench

        run = resolve_path(args.run) if args.run else None
        results = run_dispatch_bench(settings_for(args), run, args.seeds, args.window_hours)
        print(f"results: {results['path']}")
        return 0
    if args.offline:
        from ridematch_nb.bench.offline import run_offline_bench

        scale = settings_for(argparse.Namespace(params=args.scale)) if args.scale else None
        results = run_offline_bench(
            settings_for(args), repeat=args.repeat, compare=args.compare, scale=scale
        )
        print(f"results: {results['path']}")
        return 0
    from ridematch_nb.bench.stages import run_bench

    results = run_bench(
        settings_for(args), sizes=args.sizes, repeat=args.repeat, online=args.online
    )
    print(f"results: {results['path']}")
    return 0
