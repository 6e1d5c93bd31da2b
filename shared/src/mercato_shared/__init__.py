"""Mercato's shared library: the plumbing every service uses, and no service logic."""
