-- A channel's units-per-customer limit counts what the customer reserved or ordered (active and
-- committed reservations) within a window: the old index covered active ones only, so every
-- reservation of a limited channel scanned the customer's committed history. Built in the
-- migration's transaction: writes to reservations wait for it (seconds for a million rows).
CREATE INDEX reservations_by_customer_since ON reservations (channel_id, customer_id, created_at)
    WHERE customer_id IS NOT NULL AND status IN ('active', 'committed');
DROP INDEX reservations_by_customer;
