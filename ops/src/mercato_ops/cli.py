"""The ``mercato`` command line: operator tasks for a running Mercato."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mercato_ops.events import DEFAULT_PATH as DEFAULT_CATALOGUE
from mercato_ops.events import run as run_events
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
    events = commands.add_parser("events", help="write or check docs/events/catalogue.json")
    events.add_argument("action", choices=["write", "check"])
    events.add_argument("--path", type=Path, default=DEFAULT_CATALOGUE)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mercato`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "events":
        return run_events(args.action, args.path)
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
