"""The orders service: order intake, the order's state machine and the saga that drives it."""

SERVICE = "orders"
