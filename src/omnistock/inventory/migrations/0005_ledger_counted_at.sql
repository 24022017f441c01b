-- When the figure a count or snapshot movement sets was true: a snapshot imported hours after
-- it was taken counts as of then, and a later snapshot (or count) is one counted later, not
-- one imported later. Null for the rest, and for counts applied as they were taken.
ALTER TABLE stock_movements ADD COLUMN counted_at timestamptz;

-- What moved an item after a moment (a snapshot's as_of) is read by item and time: the old
-- index by item alone read the item's whole history for it. Built in the migration's
-- transaction: ledger writes wait for it.
CREATE INDEX stock_movements_by_item_time ON stock_movements (sku, location_id, occurred_at);
DROP INDEX stock_movements_by_item;
