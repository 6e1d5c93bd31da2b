"""Fault tests share one running system per module."""

from tests.e2e.fixtures import system

__all__ = ["system"]
