"""`python -m ridematch_nb ...`: the command line for the stack and the pipeline stages."""

from __future__ import annotations

import argparse
import logging
import sys

from ridematch_nb.config import ConfigError, load_settings


def _cmd_stack(args: argparse.Namespace) -> int:
    from ridematch_nb.stack import LocalStack

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ridematch_nb", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stack", help="start, stop or check the embedded local stack")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--params", default=None, help="params file (default params/local.yaml)")
    p.set_defaults(func=_cmd_stack)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "botocore", "urllib3", "s3fs", "aiobotocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)
    from ridematch_nb.stack import StackError

    try:
        return args.func(args)
    except (ConfigError, StackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
