"""Tests of the operator tools."""
