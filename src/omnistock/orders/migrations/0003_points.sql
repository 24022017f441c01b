-- Where the order's redeemed loyalty points stand at the loyalty service: held by the saga,
-- committed on completion, released by compensation (NULL: none redeemed, or not held yet).
ALTER TABLE orders ADD COLUMN points text CHECK (points IN ('held', 'committed', 'released'));
