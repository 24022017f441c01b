-- An order: what the customer bought, at what price, how it is delivered and paid, and where
-- its saga stands. Amounts in minor units of its currency.
CREATE TABLE orders (
    order_id uuid PRIMARY KEY,
    customer_id text NOT NULL,
    channel_id text NOT NULL,
    platform text NOT NULL CHECK (platform IN ('web', 'ios', 'android')),
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total bigint NOT NULL CHECK (total >= 0),
    -- One order per checkout reservation: a second one could release the first one's stock.
    reservation_id uuid NOT NULL UNIQUE,
    delivery jsonb NOT NULL,
    payment_method text NOT NULL
        CHECK (payment_method IN ('card', 'pay_later', 'try_before_you_buy')),
    -- The PSP's token (never card data), needed until the authorization is through.
    payment_token text,
    loyalty_points integer NOT NULL DEFAULT 0 CHECK (loyalty_points >= 0),
    status text NOT NULL CHECK (status IN ('placed', 'allocated', 'authorized', 'confirmed',
        'shipped', 'ready_for_pickup', 'delivered', 'collected', 'in_trial', 'completed',
        'cancelling', 'cancelled')),
    version bigint NOT NULL CHECK (version > 0),
    cancel_reason text,
    cancel_detail text,
    -- The saga: the step the worker runs next (NULL: nothing to do), how often it was tried,
    -- when it may be tried again, and who holds it while its call is under way.
    step text,
    step_started_at timestamptz,
    step_attempts integer NOT NULL DEFAULT 0 CHECK (step_attempts >= 0),
    next_attempt_at timestamptz,
    lease_id uuid,
    leased_until timestamptz,
    last_error text,
    payment_id text,
    confirm_by timestamptz NOT NULL,
    placed_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CHECK (status NOT IN ('cancelling', 'cancelled') OR cancel_reason IS NOT NULL),
    CHECK (status NOT IN ('cancelled', 'completed') OR step IS NULL),
    CHECK ((step IS NULL) = (next_attempt_at IS NULL))
);
CREATE INDEX orders_due ON orders (next_attempt_at) WHERE step IS NOT NULL;
CREATE INDEX orders_by_customer ON orders (customer_id, placed_at);
CREATE INDEX orders_unconfirmed ON orders (confirm_by)
    WHERE status IN ('placed', 'allocated', 'authorized');

CREATE TABLE order_lines (
    order_id uuid NOT NULL REFERENCES orders,
    line_number integer NOT NULL CHECK (line_number >= 0),
    sku text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    unit_price bigint NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, line_number),
    UNIQUE (order_id, sku)
);

-- Every version of every order: one row per status change, the same as its events.
CREATE TABLE order_history (
    order_id uuid NOT NULL REFERENCES orders,
    version bigint NOT NULL CHECK (version > 0),
    status text NOT NULL,
    previous_status text,
    reason text,
    step text,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (order_id, version)
);
