"""Rate-limit policies and the decisions taken under them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Source = Literal["redis", "cached", "local", "none"]

_MICROS = 1_000_000


class RatePolicy(BaseModel):
    """At most ``quota`` requests per ``window_seconds``, all of them allowed at once."""

    model_config = ConfigDict(frozen=True)

    # The name goes verbatim into a structured-field string and into Redis keys, hence the
    # narrow alphabet (no quotes, backslashes or the ':' that separates key parts).
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    quota: int = Field(gt=0)
    # Whole seconds: the ratelimit-headers draft's `w` parameter is an integer.
    window_seconds: int = Field(gt=0)

    @property
    def interval_us(self) -> int:
        """Emission interval in microseconds: window / quota, rounded up."""
        # Rounding up never admits more than quota per window; it only matters for windows
        # that do not split into whole microseconds (e.g. 10 s / 3).
        return -(-self.window_seconds * _MICROS // self.quota)

    @property
    def burst_us(self) -> int:
        """Burst tolerance in microseconds: quota intervals, so a full bucket admits quota."""
        # quota * interval rather than the window itself, so that rounding the interval up
        # cannot cost the burst its last request.
        return self.quota * self.interval_us


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request: admitted or not, and what the headers should say.

    ``source`` says who decided: the shared Redis bucket, a refusal of Redis's remembered
    until its retry time ("cached"), the in-process fallback while Redis is unreachable, or
    nobody ("none": failing open or closed), in which case ``remaining`` and ``reset_after``
    are not measurements.
    """

    allowed: bool
    policy: RatePolicy
    remaining: int
    # Seconds until the bucket is full again.
    reset_after: float
    # Seconds until this request would have been admitted; 0 when it was.
    retry_after: float
    source: Source
