"""The ``mercato`` operator CLI."""
