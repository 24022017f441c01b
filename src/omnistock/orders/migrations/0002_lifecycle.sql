-- After confirmation: shipments, delivery or collection, the try-before-you-buy trial, the
-- settlement of the payment and returns.

-- A completed order may still have work: a return to restock and refund.
ALTER TABLE orders DROP CONSTRAINT orders_check1;
ALTER TABLE orders ADD CONSTRAINT orders_cancelled_has_no_step
    CHECK (status <> 'cancelled' OR step IS NULL);
ALTER TABLE orders
    ADD COLUMN pickup_code text,
    ADD COLUMN delivered_at timestamptz,
    ADD COLUMN trial_ends_at timestamptz,
    ADD COLUMN completed_at timestamptz,
    ADD CONSTRAINT orders_trial_has_an_end CHECK (status <> 'in_trial' OR trial_ends_at IS NOT NULL);
CREATE INDEX orders_trials_ending ON orders (trial_ends_at) WHERE status = 'in_trial';

-- The allocations inventory made for the order when its reservation was committed, and the
-- shipment each left in. A shipment event may arrive before the commit's answer is recorded
-- (a crash between the two), so what it names is kept even without sku and quantity yet.
CREATE TABLE order_allocations (
    allocation_id text PRIMARY KEY,
    order_id uuid NOT NULL REFERENCES orders,
    sku text,
    location_id text,
    quantity integer CHECK (quantity > 0),
    shipment_id text,
    shipped_at timestamptz
);
CREATE INDEX order_allocations_of ON order_allocations (order_id);

CREATE TABLE order_shipments (
    order_id uuid NOT NULL REFERENCES orders,
    shipment_id text NOT NULL,
    status text NOT NULL CHECK (status IN ('shipped', 'delivered')),
    shipped_at timestamptz NOT NULL,
    delivered_at timestamptz,
    PRIMARY KEY (order_id, shipment_id)
);

-- Try before you buy: what the customer decided for each line during the trial.
ALTER TABLE order_lines
    ADD COLUMN decision text CHECK (decision IN ('keep', 'return')),
    ADD COLUMN decided_at timestamptz;

-- Goods coming back: lines sent back from a trial (never charged, nothing to refund) or a
-- return after completion (an RMA: refunded). Received at a location, restocked there, then
-- settled.
CREATE TABLE order_returns (
    return_id uuid PRIMARY KEY,
    order_id uuid NOT NULL REFERENCES orders,
    kind text NOT NULL CHECK (kind IN ('trial', 'rma')),
    status text NOT NULL CHECK (status IN ('requested', 'received', 'settled')),
    refund_amount bigint NOT NULL CHECK (refund_amount >= 0),
    reason text,
    location_id text,
    sellable boolean,
    requested_at timestamptz NOT NULL,
    received_at timestamptz,
    settled_at timestamptz,
    CHECK (status = 'requested' OR location_id IS NOT NULL)
);
CREATE INDEX order_returns_of ON order_returns (order_id);

CREATE TABLE order_return_lines (
    return_id uuid NOT NULL REFERENCES order_returns,
    sku text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    unit_price bigint NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (return_id, sku)
);
