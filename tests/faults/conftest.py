"""Fault tests share one running system per module."""

from tests.e2e.fixtures import system, system_env

__all__ = ["system", "system_env"]
