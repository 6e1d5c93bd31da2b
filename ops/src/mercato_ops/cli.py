"""The ``mercato`` command line: operator tasks for a running Mercato."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import httpx
from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from mercato_ops.check import print_report, run_check
from mercato_ops.demo import StackNotRunningError, print_outcomes, run_demo
from mercato_ops.dlq import list_letters, replay
from mercato_ops.events import DEFAULT_PATH as DEFAULT_CATALOGUE
from mercato_ops.events import run as run_events
from mercato_ops.settings import OpsSettings
from mercato_ops.token import DEV_SECRET_FILE, make_token
from mercato_shared.identity import Role


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mercato", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="print a development bearer token")
    token.add_argument("--sub", default="dev-customer", help="the user id (default dev-customer)")
    token.add_argument(
        "--roles",
        default="customer",
        help="comma-separated roles: customer, admin (default customer)",
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument("--secret-file", type=Path, default=DEV_SECRET_FILE)
    commands.add_parser("check", help="verify every invariant of a running Mercato")
    demo = commands.add_parser("demo", help="place N orders through the gateway and wait")
    demo.add_argument("count", type=int, nargs="?", default=100)
    demo.add_argument("--secret-file", type=Path, default=DEV_SECRET_FILE)
    demo.add_argument("--within", type=float, default=300, help="seconds to wait for the end")
    dlq = commands.add_parser("dlq", help="list or replay dead letters")
    dlq.add_argument("action", choices=["list", "replay"])
    events = commands.add_parser("events", help="write or check docs/events/catalogue.json")
    events.add_argument("action", choices=["write", "check"])
    events.add_argument("--path", type=Path, default=DEFAULT_CATALOGUE)
    return parser


def _check() -> int:
    try:
        report = asyncio.run(run_check(OpsSettings()))
    except (OSError, httpx.HTTPError, SQLAlchemyError) as exc:
        print(f"cannot reach a running Mercato ({exc}); start it with `make up`", file=sys.stderr)  # noqa: T201
        return 2
    print_report(report)
    return 0 if report.ok else 1


def _dlq(action: str) -> int:
    settings = OpsSettings()
    command = list_letters if action == "list" else replay
    try:
        letters = asyncio.run(command(settings.kafka_bootstrap_servers, settings.kafka_prefix))
    except KafkaError as exc:
        print(f"cannot reach Kafka ({exc}); start it with `make up`", file=sys.stderr)  # noqa: T201
        return 2
    for letter in letters:
        print(letter.summary)  # noqa: T201
    verb = "dead letters" if action == "list" else "dead letters replayed"
    print(f"{len(letters)} {verb}")  # noqa: T201
    return 0


def _demo(count: int, secret_file: Path, within: float) -> int:
    if count < 1:
        print("N must be at least 1", file=sys.stderr)  # noqa: T201
        return 2
    try:
        outcomes = asyncio.run(
            run_demo(OpsSettings().gateway_url, count, secret_file=secret_file, within=within)
        )
    except (StackNotRunningError, FileNotFoundError, TimeoutError, httpx.HTTPError) as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        return 1
    print_outcomes(outcomes)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mercato`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "events":
        return run_events(args.action, args.path)
    if args.command == "dlq":
        return _dlq(args.action)
    if args.command == "check":
        return _check()
    if args.command == "demo":
        return _demo(args.count, args.secret_file, args.within)
    if args.command == "token":
        try:
            roles = [Role(name.strip()) for name in args.roles.split(",") if name.strip()]
        except ValueError:
            print(f"unknown role in {args.roles!r}; use customer and/or admin", file=sys.stderr)  # noqa: T201
            return 2
        try:
            token = make_token(
                subject=args.sub, roles=roles, ttl_seconds=args.ttl, secret_file=args.secret_file
            )
        except FileNotFoundError as exc:
            print(exc, file=sys.stderr)  # noqa: T201
            return 1
        print(token)  # noqa: T201 - the token is the command's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
