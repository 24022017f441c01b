"""The demo service: the platform's event path end to end, with nothing else in the way.

``POST /v1/pings`` records a ping and its ``PingSent`` event in one transaction (outbox); the relay
publishes it; the demo's consumer applies it into ``pongs`` through the inbox. Used by
``make demo``, the outbox benchmark and the platform's crash tests.
"""

SERVICE = "demo"
