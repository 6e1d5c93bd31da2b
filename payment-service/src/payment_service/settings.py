"""Payment service settings: every knob is a PAYMENT_* environment variable."""

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mercato_shared.resilience import BreakerConfig, RetryBudget, RetryPolicy
from mercato_shared.settings import ServiceSettings


class PaymentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENT_")

    service_name: str = "payment"
    database_url: SecretStr = SecretStr(
        "postgresql+asyncpg://mercato:mercato@127.0.0.1:5432/payment"
    )
    api_port: int = 8003
    worker_port: int = 9103

    # The card processor (payment-sandbox in development).
    sandbox_url: str = "http://127.0.0.1:8090"
    sandbox_connect_timeout_seconds: float = Field(default=1.0, gt=0)
    # Per attempt; an authorization that outlives it has an unknown outcome and is retried
    # with the same idempotency key.
    sandbox_timeout_seconds: float = Field(default=5.0, gt=0)
    sandbox_max_connections: int = Field(default=20, ge=1)
    # Processor calls of one batch's different orders in flight at once (per partition).
    sandbox_calls_per_batch: int = Field(default=8, ge=1, le=100)
    sandbox_max_attempts: int = Field(default=4, ge=1)
    sandbox_retry_base_delay_seconds: float = Field(default=0.2, ge=0)
    sandbox_retry_max_delay_seconds: float = Field(default=2.0, ge=0)
    sandbox_retry_budget_ratio: float = Field(default=0.2, ge=0)
    sandbox_retry_budget_min_per_second: float = Field(default=3.0, ge=0)
    sandbox_breaker_window_size: int = Field(default=20, ge=1)
    sandbox_breaker_minimum_calls: int = Field(default=10, ge=1)
    sandbox_breaker_failure_rate_percent: float = Field(default=50.0, gt=0, le=100)
    sandbox_breaker_slow_call_seconds: float = Field(default=4.0, gt=0)
    sandbox_breaker_open_seconds: float = Field(default=10.0, gt=0)
    sandbox_breaker_half_open_probes: int = Field(default=3, ge=1)

    def sandbox_retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.sandbox_max_attempts,
            base_delay=self.sandbox_retry_base_delay_seconds,
            max_delay=self.sandbox_retry_max_delay_seconds,
        )

    def sandbox_retry_budget(self) -> RetryBudget:
        return RetryBudget(
            ratio=self.sandbox_retry_budget_ratio,
            min_per_second=self.sandbox_retry_budget_min_per_second,
        )

    def sandbox_breaker_config(self) -> BreakerConfig:
        return BreakerConfig(
            window_size=self.sandbox_breaker_window_size,
            minimum_calls=min(self.sandbox_breaker_minimum_calls, self.sandbox_breaker_window_size),
            failure_rate_threshold=self.sandbox_breaker_failure_rate_percent,
            slow_call_duration=self.sandbox_breaker_slow_call_seconds,
            open_duration=self.sandbox_breaker_open_seconds,
            half_open_probes=self.sandbox_breaker_half_open_probes,
        )
