"""Access rules: which roles may call which method and path, decided at the gateway.

Patterns are paths whose ``{name}`` segments match one segment and whose trailing ``/**``
matches the rest of the path (or nothing). Services still check ownership themselves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from gateway.settings import AccessRule
from mercato_shared.identity import Identity, Role


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Turn ``/api/v1/products/{sku}/**`` into an anchored regular expression."""
    rest = pattern.endswith("/**")
    segments = pattern.removesuffix("/**").strip("/").split("/")
    parts = [
        "[^/]+" if segment.startswith("{") and segment.endswith("}") else re.escape(segment)
        for segment in segments
        if segment
    ]
    regex = "/" + "/".join(parts)
    if rest:
        regex += "(?:/.*)?"
    return re.compile(regex + "/?")


@dataclass(frozen=True, slots=True)
class CompiledRule:
    regex: re.Pattern[str]
    methods: frozenset[str] | None
    public: bool
    roles: frozenset[Role]

    def matches(self, method: str, path: str) -> bool:
        return (self.methods is None or method in self.methods) and bool(self.regex.fullmatch(path))


class Verdict(Enum):
    ALLOW = "allow"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"


class AccessPolicy:
    """First matching rule decides; a path no rule covers is refused (deny by default)."""

    def __init__(self, rules: Sequence[AccessRule]) -> None:
        self._rules = [
            CompiledRule(
                regex=compile_pattern(rule.path),
                methods=None if "*" in rule.methods else frozenset(m.upper() for m in rule.methods),
                public=rule.public,
                roles=frozenset(rule.roles),
            )
            for rule in rules
        ]

    def decide(self, method: str, path: str, identity: Identity | None) -> Verdict:
        """ALLOW, UNAUTHENTICATED (401: no valid token) or FORBIDDEN (403: roles lacking)."""
        rule = self.rule(method, path)
        if rule is not None and rule.public:
            return Verdict.ALLOW
        if identity is None:
            return Verdict.UNAUTHENTICATED
        if rule is None or not (identity.roles & rule.roles):
            return Verdict.FORBIDDEN
        return Verdict.ALLOW

    def rule(self, method: str, path: str) -> CompiledRule | None:
        """The rule that decides ``method`` on ``path``, if any covers it."""
        return next((rule for rule in self._rules if rule.matches(method, path)), None)
