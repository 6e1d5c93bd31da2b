"""Sandbox settings: every knob is a SANDBOX_* environment variable."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mercato_shared.settings import DEV_STATE_DIR


class Operation(StrEnum):
    """What a client asks the sandbox to do; fault knobs can be aimed at some of them."""

    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"
    VOID_KEY = "void_key"


class Knobs(BaseModel):
    """Behaviour that tests and fault drills change at run time (PUT /v1/_config)."""

    model_config = ConfigDict(extra="forbid")

    decline_over_amount: int = Field(
        default=100_000, ge=0, description="decline authorizations above this many minor units"
    )
    decline_rate: float = Field(default=0.0, ge=0, le=1, description="share declined at random")
    seed: int | None = Field(default=None, description="seed of the random draws; None: random")
    latency_ms: int = Field(default=0, ge=0, description="added to every faulted operation")
    latency_jitter_ms: int = Field(default=0, ge=0, description="uniform extra latency, 0..N")
    failure_rate: float = Field(
        default=0.0, ge=0, le=1, description="answer 503 without doing the operation"
    )
    timeout_rate: float = Field(
        default=0.0, ge=0, le=1, description="do the operation, then hang before answering"
    )
    hang_seconds: float = Field(default=30.0, ge=0, le=3600)
    fault_operations: frozenset[Operation] = Field(
        default=frozenset(Operation), description="operations the latency and fault knobs hit"
    )


class SandboxSettings(Knobs, BaseSettings):
    """Where the sandbox listens and keeps its ledger, plus the knobs' starting values."""

    model_config = SettingsConfigDict(env_prefix="SANDBOX_", extra="ignore", validate_default=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=1, le=65535)
    database_path: Path = DEV_STATE_DIR / "sandbox.db"
    log_level: str = "INFO"

    def knobs(self) -> Knobs:
        """The knobs part of the settings, as the runtime configuration starts."""
        return Knobs.model_validate(self.model_dump(include=set(Knobs.model_fields)))
