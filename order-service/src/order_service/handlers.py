"""Handlers of the events the order service consumes, by event type.

The saga's replies (inventory.*, payment.*) are handled here once the saga lands; until
then the worker consumes and acknowledges them so that its consumer group stays current.
"""

from mercato_shared.consumer import Handler

HANDLERS: dict[str, Handler] = {}
