"""Handlers of the events the notification service consumes, by event type.

Mail on order.confirmed / order.cancelled lands with the saga; until then the worker
acknowledges the orders topic so that its consumer group stays current.
"""

from mercato_shared.consumer import Handler

HANDLERS: dict[str, Handler] = {}
