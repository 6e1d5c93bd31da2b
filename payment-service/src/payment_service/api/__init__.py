"""HTTP routes of the payment service."""
