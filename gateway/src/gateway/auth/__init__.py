"""Client authentication: bearer JWTs from configured issuers."""

from gateway.auth.authenticator import AuthenticationError, Authenticator, KeysUnavailableError

__all__ = ["AuthenticationError", "Authenticator", "KeysUnavailableError"]
