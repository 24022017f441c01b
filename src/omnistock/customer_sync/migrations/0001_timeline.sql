-- The apps' view: one row per order, payment, parcel and return, each field with the version
-- that wrote it (see projection.py). customer_id and order_id are whatever the events said so
-- far: a payment names its customer only when it is created.
CREATE TABLE entries (
    kind text NOT NULL CHECK (kind IN ('order', 'payment', 'shipment', 'return')),
    entity_id text NOT NULL,
    customer_id text,
    order_id text,
    version bigint NOT NULL CHECK (version >= 0),
    fields jsonb NOT NULL,
    PRIMARY KEY (kind, entity_id)
);
CREATE INDEX entries_of_customer ON entries (customer_id) WHERE customer_id IS NOT NULL;
CREATE INDEX entries_of_order ON entries (order_id) WHERE order_id IS NOT NULL;

-- Push notifications, each recorded once per (kind, key) whatever the redeliveries and replays;
-- the sender job delivers the due ones and marks them sent.
CREATE TABLE notifications (
    notification_id uuid PRIMARY KEY,
    kind text NOT NULL,
    key text NOT NULL,
    order_id text NOT NULL,
    customer_id text,
    details jsonb NOT NULL,
    due_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    sent_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    UNIQUE (kind, key)
);
CREATE INDEX notifications_due ON notifications (due_at) WHERE sent_at IS NULL;
