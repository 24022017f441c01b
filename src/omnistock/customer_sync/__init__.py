"""The customer-sync service: per customer, the timeline the mobile apps show (orders, payments,
shipments, returns), kept from the other services' events; and the push notifications the apps
should get, each recorded once."""

SERVICE = "customer-sync"
