"""Problems the sandbox answers with, on top of the library's 404 and 409."""

from mercato_shared.problems import ProblemError


class IdempotencyKeyReusedError(ProblemError):
    """The key was used before for a different request."""

    status, slug, title = 422, "idempotency-key-reused", "Idempotency Key Reused"


class ProcessorUnavailableError(ProblemError):
    """An injected outage: nothing was done."""

    status, slug, title = 503, "processor-unavailable", "Service Unavailable"
