"""The routing table: which upstream instance serves a request path."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from gateway.settings import RouteConfig


@dataclass
class Route:
    prefix: str
    instances: tuple[str, ...]
    timeout_seconds: float
    _cycle: Iterator[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cycle = itertools.cycle(self.instances)

    def matches(self, path: str) -> bool:
        # Whole path segments only: /api/v1/orders must not capture /api/v1/ordersX.
        return path == self.prefix or path.startswith(self.prefix + "/")

    def next_instance(self) -> str:
        """Round robin over the route's instances."""
        return next(self._cycle)


class RouteTable:
    def __init__(self, configs: Sequence[RouteConfig]) -> None:
        routes = [
            Route(
                prefix=config.prefix.rstrip("/") or "/",
                instances=tuple(str(url).rstrip("/") for url in config.upstreams),
                timeout_seconds=config.timeout_seconds,
            )
            for config in configs
        ]
        # Longest prefix first, so a specific route wins over a general one.
        self._routes = sorted(routes, key=lambda route: len(route.prefix), reverse=True)

    def match(self, path: str) -> Route | None:
        return next((route for route in self._routes if route.matches(path)), None)

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)
