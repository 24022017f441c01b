-- A sale can be called off: before it starts it never applies; while it runs it ends at that
-- moment (ends_at moves to it). The row stays, with cancelled_at, so the history stays whole.
ALTER TABLE sales ADD COLUMN cancelled_at timestamptz;
ALTER TABLE sales DROP CONSTRAINT sales_do_not_overlap;
-- Only sales that apply (or did) may not overlap: a called-off one frees its window.
ALTER TABLE sales ADD CONSTRAINT sales_do_not_overlap EXCLUDE USING gist (
    channel_id WITH =, sku WITH =, tstzrange(starts_at, ends_at) WITH &&)
    WHERE (cancelled_at IS NULL OR cancelled_at > starts_at);
