"""Handlers of the events the payment service consumes, by event type.

Authorization on inventory.reserved and compensation on order.cancelled land with the saga;
until then the worker acknowledges these topics so that its consumer group stays current.
"""

from mercato_shared.consumer import Handler

HANDLERS: dict[str, Handler] = {}
