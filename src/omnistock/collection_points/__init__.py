"""The collection-points service: stores and parcel lockers per market, their hours and slots,
bookings of a slot for an order, and the parcel's life there (arrived, collected, expired)."""

SERVICE = "collection-points"
