-- A SKU whose first base price lies in the future has nothing published yet but must still be
-- picked up by the scheduler when that price starts: it gets a row with no figures (version 0)
-- and the moment of its first price as next_change.
ALTER TABLE published_prices ALTER COLUMN effective DROP NOT NULL,
                             ALTER COLUMN regular DROP NOT NULL;
