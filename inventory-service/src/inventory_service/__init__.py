"""Inventory service: owns the catalogue's stock and its reservations."""
