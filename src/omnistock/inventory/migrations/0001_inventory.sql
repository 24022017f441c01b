-- Locations hold stock; channels (brand × market) sell from locations by sourcing rules.
CREATE TABLE locations (
    location_id text PRIMARY KEY CHECK (location_id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    kind text NOT NULL CHECK (kind IN ('warehouse', 'store', 'supplier')),
    country char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    capabilities text[] NOT NULL DEFAULT '{}'
        CHECK (capabilities <@ ARRAY['ship', 'click_and_collect', 'ship_from_store']),
    name text NOT NULL
);

CREATE TABLE channels (
    channel_id text PRIMARY KEY CHECK (channel_id ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    brand text NOT NULL,
    market char(2) NOT NULL CHECK (market ~ '^[A-Z]{2}$'),
    availability_cap integer CHECK (availability_cap >= 0),
    max_units_per_customer integer CHECK (max_units_per_customer > 0),
    version bigint NOT NULL DEFAULT 1
);

CREATE TABLE sourcing_rules (
    channel_id text NOT NULL REFERENCES channels ON DELETE CASCADE,
    location_id text NOT NULL REFERENCES locations,
    priority integer NOT NULL CHECK (priority >= 1),
    safety_stock integer NOT NULL DEFAULT 0 CHECK (safety_stock >= 0),
    PRIMARY KEY (channel_id, location_id),
    UNIQUE (channel_id, priority)
);
CREATE INDEX sourcing_rules_by_location ON sourcing_rules (location_id);

-- The invariants live here too: a bug in the code cannot oversell.
CREATE TABLE stock (
    sku text NOT NULL,
    location_id text NOT NULL REFERENCES locations,
    on_hand integer NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    allocated integer NOT NULL DEFAULT 0 CHECK (allocated >= 0),
    version bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (sku, location_id),
    CHECK (reserved + allocated <= on_hand)
);

-- Append-only: on_hand of a (sku, location) is the sum of its movements.
CREATE TABLE stock_movements (
    movement_id bigserial PRIMARY KEY,
    sku text NOT NULL,
    location_id text NOT NULL,
    quantity integer NOT NULL CHECK (quantity <> 0),
    reason text NOT NULL,
    source text,
    reference text,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX stock_movements_by_item ON stock_movements (sku, location_id);
CREATE FUNCTION stock_movements_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stock_movements is append-only';
END $$;
CREATE TRIGGER stock_movements_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON stock_movements
    FOR EACH STATEMENT EXECUTE FUNCTION stock_movements_append_only();

-- The last sequence number applied per source and item: an absolute count from a WMS or a
-- till with an older or equal sequence is stale and changes nothing.
CREATE TABLE source_sequences (
    source text NOT NULL,
    sku text NOT NULL,
    location_id text NOT NULL,
    last_sequence bigint NOT NULL,
    PRIMARY KEY (source, sku, location_id)
);

CREATE TABLE reservations (
    reservation_id uuid PRIMARY KEY,
    channel_id text NOT NULL REFERENCES channels,
    client_id text NOT NULL,
    customer_id text,
    status text NOT NULL CHECK (status IN ('active', 'committed', 'released', 'expired')),
    order_id text,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    version integer NOT NULL DEFAULT 1
);
CREATE INDEX reservations_to_expire ON reservations (expires_at) WHERE status = 'active';
CREATE INDEX reservations_by_customer ON reservations (channel_id, customer_id)
    WHERE status = 'active' AND customer_id IS NOT NULL;

CREATE TABLE reservation_lines (
    reservation_id uuid NOT NULL REFERENCES reservations ON DELETE CASCADE,
    sku text NOT NULL,
    location_id text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, sku, location_id)
);

CREATE TABLE allocations (
    allocation_id uuid PRIMARY KEY,
    order_id text NOT NULL,
    channel_id text NOT NULL,
    sku text NOT NULL,
    location_id text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    status text NOT NULL CHECK (status IN ('allocated', 'shipped', 'released')),
    reason text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX allocations_by_order ON allocations (order_id);
CREATE INDEX allocations_open_by_item ON allocations (sku, location_id) WHERE status = 'allocated';

-- The last published figure per channel and SKU: an event goes out only when it changes.
CREATE TABLE availability (
    channel_id text NOT NULL,
    sku text NOT NULL,
    available integer NOT NULL CHECK (available >= 0),
    version bigint NOT NULL,
    PRIMARY KEY (channel_id, sku)
);
