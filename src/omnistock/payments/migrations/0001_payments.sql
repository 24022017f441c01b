-- A payment: the money side of one order, in minor units of its currency. The CHECKs hold the
-- money rules even against a bug in the code: captures (done or under way) and releases never
-- exceed the authorization, refunds (done or under way) never exceed the captures.
CREATE TABLE payments (
    payment_id uuid PRIMARY KEY,
    order_id text NOT NULL,
    customer_id text NOT NULL,
    method text NOT NULL CHECK (method IN ('card', 'pay_later', 'try_before_you_buy')),
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount bigint NOT NULL CHECK (amount > 0),
    status text NOT NULL CHECK (status IN ('created', 'authorizing', 'authorized',
        'reauthorizing', 'voiding', 'settled', 'refunded', 'declined', 'voided', 'expired')),
    version bigint NOT NULL CHECK (version > 0),
    authorized bigint NOT NULL DEFAULT 0 CHECK (authorized BETWEEN 0 AND amount),
    captured bigint NOT NULL DEFAULT 0 CHECK (captured >= 0),
    capture_pending bigint NOT NULL DEFAULT 0 CHECK (capture_pending >= 0),
    released bigint NOT NULL DEFAULT 0 CHECK (released >= 0),
    refunded bigint NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    refund_pending bigint NOT NULL DEFAULT 0 CHECK (refund_pending >= 0),
    payment_method_token text,
    authorization_reference text,
    authorization_expires_at timestamptz,
    trial_ends_at timestamptz,
    void_requested uuid,
    expiry_warned_for text,
    reauthorization_tried_for text,
    trial_capture_tried_for text,
    -- When the scheduler should look at the payment next (expiry, renewal, trial end).
    next_check_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT captures_within_authorization
        CHECK (captured + capture_pending + released <= authorized),
    CONSTRAINT refunds_within_captures CHECK (refunded + refund_pending <= captured)
);
-- One payment in play per order; a declined, voided or expired one makes room for the next.
CREATE UNIQUE INDEX payments_one_live_per_order ON payments (order_id)
    WHERE status NOT IN ('declined', 'voided', 'expired');
CREATE INDEX payments_by_order ON payments (order_id);
CREATE INDEX payments_by_authorization ON payments (authorization_reference);
CREATE INDEX payments_due ON payments (next_check_at) WHERE next_check_at IS NOT NULL;

-- Calls to the PSP: recorded before they are made, resolved after. The operation id is the
-- idempotency key the PSP sees, so sending one again can never do it twice.
CREATE TABLE payment_operations (
    operation_id uuid PRIMARY KEY,
    payment_id uuid NOT NULL REFERENCES payments,
    kind text NOT NULL
        CHECK (kind IN ('authorize', 'reauthorize', 'capture', 'void', 'refund', 'release')),
    amount bigint NOT NULL CHECK (amount >= 0),
    target_reference text,
    trigger text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    psp_reference text,
    failure_reason text,
    attempts integer NOT NULL DEFAULT 0,
    -- When the recovery job may take the operation over: the request that made it has
    -- until then to get the PSP's answer itself.
    next_attempt_at timestamptz,
    requested_at timestamptz NOT NULL,
    resolved_at timestamptz,
    CHECK ((status = 'pending') = (resolved_at IS NULL))
);
CREATE INDEX payment_operations_due ON payment_operations (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX payment_operations_of_payment ON payment_operations (payment_id, requested_at);

-- Every version of every payment, as published.
CREATE TABLE payment_history (
    payment_id uuid NOT NULL REFERENCES payments,
    version bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    type text NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (payment_id, version)
);

-- PSP webhooks seen, by the PSP's event id: a redelivery is recognised and changes nothing.
CREATE TABLE psp_webhooks (
    event_id text PRIMARY KEY,
    type text NOT NULL,
    received_at timestamptz NOT NULL,
    result text NOT NULL
);
