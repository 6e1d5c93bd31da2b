"""Mercato's API gateway: the only door from clients to the services."""
