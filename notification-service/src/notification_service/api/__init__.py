"""HTTP routes of the notification service."""
