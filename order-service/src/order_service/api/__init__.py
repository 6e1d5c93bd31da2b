"""HTTP routes of the order service."""
