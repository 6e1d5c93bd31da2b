"""Payment service: authorizes, captures, voids and refunds orders' payments at the provider."""
