"""The pricing service: price lists per channel, scheduled sales, the EU Omnibus lowest price."""

SERVICE = "pricing"
