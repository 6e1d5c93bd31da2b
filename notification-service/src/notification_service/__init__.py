"""Notification service: one stored, mailed notification per order outcome."""
