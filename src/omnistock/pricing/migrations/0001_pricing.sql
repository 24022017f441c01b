-- A channel sells in its market's currency; prices are tax-inclusive, the VAT rate recorded.
CREATE TABLE price_lists (
    channel_id text PRIMARY KEY CHECK (channel_id ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    vat_rate_basis_points integer NOT NULL CHECK (vat_rate_basis_points BETWEEN 0 AND 10000),
    version bigint NOT NULL DEFAULT 1
);

-- The full history: rows are only ever added.
CREATE TABLE base_prices (
    channel_id text NOT NULL REFERENCES price_lists,
    sku text NOT NULL,
    valid_from timestamptz NOT NULL,
    amount bigint NOT NULL CHECK (amount >= 0),
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (channel_id, sku, valid_from)
);

CREATE TABLE sales (
    sale_id uuid PRIMARY KEY,
    channel_id text NOT NULL REFERENCES price_lists,
    sku text NOT NULL,
    starts_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    amount bigint NOT NULL CHECK (amount >= 0),
    recorded_at timestamptz NOT NULL,
    CHECK (ends_at > starts_at)
);
-- In public, where every service schema's search path finds it (and a dropped schema does not
-- take it along).
CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;
-- Two sales of one SKU never overlap, whatever the code does.
ALTER TABLE sales ADD CONSTRAINT sales_do_not_overlap EXCLUDE USING gist (
    channel_id WITH =, sku WITH =, tstzrange(starts_at, ends_at) WITH &&);

-- What was last published per channel and SKU, and when it next changes: the scheduler
-- publishes rows whose next_change has come, in the same transaction as it moves it on, so a
-- transition is published exactly once, and one missed while down is published at restart.
CREATE TABLE published_prices (
    channel_id text NOT NULL,
    sku text NOT NULL,
    effective bigint NOT NULL,
    regular bigint NOT NULL,
    lowest_30d bigint,
    next_change timestamptz,
    version bigint NOT NULL,
    PRIMARY KEY (channel_id, sku)
);
CREATE INDEX published_prices_due ON published_prices (next_change) WHERE next_change IS NOT NULL;
