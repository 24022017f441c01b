"""The storefront read path: availability and price of every SKU in every channel, answered from
an in-memory read model that each replica builds from the compacted availability and price
topics. It owns nothing durable: a new replica reads both topics from their beginning.
"""

SERVICE = "storefront"
