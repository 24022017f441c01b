-- Loyalty accounts (balance, held, tier) and parcels at collection points (with the pickup code
-- the customer shows) join the apps' view.
ALTER TABLE entries DROP CONSTRAINT entries_kind_check;
ALTER TABLE entries ADD CONSTRAINT entries_kind_check
    CHECK (kind IN ('order', 'payment', 'shipment', 'return', 'member', 'parcel'));
