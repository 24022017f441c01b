-- The allocation events of an order (allocated, shipped, released; keyed by order id) carry
-- the order's allocation version: one more per event, so that a reader can drop what is stale.
-- (They carried 1 for allocated and 0 for the rest.) Orders already under way start past the
-- events they have had.
CREATE TABLE allocation_versions (
    order_id text PRIMARY KEY,
    version bigint NOT NULL CHECK (version >= 1)
);
INSERT INTO allocation_versions (order_id, version)
SELECT order_id, count(DISTINCT created_at) + count(*) FILTER (WHERE status <> 'allocated')
FROM allocations GROUP BY order_id;
