"""The inventory service: stock per SKU and location, channels and their sourcing, reservations
that never oversell, allocations, the movement ledger and the availability every platform shows.
"""

SERVICE = "inventory"
