"""The loyalty service: member accounts per brand group and market, a points ledger, tiers,
earning from completed orders and redemption as holds the order saga commits or releases."""

SERVICE = "loyalty"
