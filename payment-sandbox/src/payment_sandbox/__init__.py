"""Mercato's payment sandbox: a card processor simulator with a durable ledger and fault knobs."""
