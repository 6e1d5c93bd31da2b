"""Order service: owns orders and their state machine."""
