-- A member account: one customer's points in one brand group and market. The CHECKs hold the
-- programme's rules even against a bug in the code: the balance never goes below zero, and
-- every point ever earned is in the balance, held for an order, spent, reversed or expired.
CREATE TABLE members (
    member_id uuid PRIMARY KEY,
    customer_id text NOT NULL,
    brand_group text NOT NULL,
    market text NOT NULL,
    tier text NOT NULL,
    version bigint NOT NULL CHECK (version >= 0),
    balance bigint NOT NULL CHECK (balance >= 0),
    held bigint NOT NULL CHECK (held >= 0),
    earned bigint NOT NULL CHECK (earned >= 0),
    spent bigint NOT NULL CHECK (spent >= 0),
    reversed bigint NOT NULL CHECK (reversed >= 0),
    expired bigint NOT NULL CHECK (expired >= 0),
    -- When the expiry job and the tier review should look at the account next.
    next_expiry_at timestamptz,
    tier_review_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT members_one_per_group_and_market UNIQUE (customer_id, brand_group, market),
    CONSTRAINT every_point_accounted_for
        CHECK (balance + held = earned - spent - reversed - expired)
);
CREATE INDEX members_expiry_due ON members (next_expiry_at) WHERE next_expiry_at IS NOT NULL;
CREATE INDEX members_tier_review_due ON members (tier_review_at)
    WHERE tier_review_at IS NOT NULL;

-- The points ledger: every change of a balance, one version of its account each, with the
-- figures after it. Summing an account's changes gives its balance and held points.
CREATE TABLE ledger (
    member_id uuid NOT NULL REFERENCES members,
    version bigint NOT NULL CHECK (version > 0),
    kind text NOT NULL
        CHECK (kind IN ('earn', 'hold', 'commit', 'release', 'expire', 'reverse')),
    points bigint NOT NULL CHECK (points >= 0),
    balance_change bigint NOT NULL,
    held_change bigint NOT NULL,
    balance bigint NOT NULL CHECK (balance >= 0),
    held bigint NOT NULL CHECK (held >= 0),
    order_id text,
    details jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (member_id, version)
);

-- Tier moves: the other versions of an account (they change no points).
CREATE TABLE tier_changes (
    member_id uuid NOT NULL REFERENCES members,
    version bigint NOT NULL CHECK (version > 0),
    tier text NOT NULL,
    previous_tier text NOT NULL,
    qualifying_points bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (member_id, version)
);

-- Points held for an order (redemption), one hold per order. A release that comes before
-- its hold (the saga gave up on a hold whose answer it never got) leaves a released hold of
-- no points and no member, so that the late hold is refused instead of holding for good.
CREATE TABLE holds (
    order_id text PRIMARY KEY,
    member_id uuid REFERENCES members,
    points bigint NOT NULL CHECK (points >= 0),
    status text NOT NULL CHECK (status IN ('held', 'committed', 'released')),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT holds_of_a_member
        CHECK ((member_id IS NOT NULL AND points > 0) OR (status = 'released' AND points = 0))
);
CREATE INDEX holds_of_member ON holds (member_id, created_at);

-- Orders as the programme sees them (from the orders topic): what they earn, and when.
CREATE TABLE purchases (
    order_id text PRIMARY KEY,
    member_id uuid NOT NULL REFERENCES members,
    currency char(3) NOT NULL,
    market text NOT NULL,
    status text NOT NULL CHECK (status IN ('open', 'scheduled', 'earned', 'cancelled')),
    order_version bigint NOT NULL,
    completed_at timestamptz,
    earn_at timestamptz,
    points bigint NOT NULL DEFAULT 0 CHECK (points >= 0),
    qualifying bigint NOT NULL DEFAULT 0 CHECK (qualifying >= 0),
    multiplier_percent integer NOT NULL DEFAULT 0,
    points_to_redeem bigint NOT NULL DEFAULT 0,  -- what the order asked to redeem
    points_reversed bigint NOT NULL DEFAULT 0 CHECK (points_reversed >= 0),
    points_unrecovered bigint NOT NULL DEFAULT 0 CHECK (points_unrecovered >= 0),
    qualifying_reversed bigint NOT NULL DEFAULT 0 CHECK (qualifying_reversed >= 0),
    earned_at timestamptz,
    expires_at timestamptz,
    placed_at timestamptz NOT NULL,
    CHECK (points_reversed + points_unrecovered <= points),
    CHECK (qualifying_reversed <= qualifying),
    CHECK (status <> 'scheduled' OR earn_at IS NOT NULL),
    CHECK ((status = 'earned') = (earned_at IS NOT NULL))
);
CREATE INDEX purchases_due ON purchases (earn_at) WHERE status = 'scheduled';
CREATE INDEX purchases_earned_by_member ON purchases (member_id, earned_at)
    WHERE status = 'earned';

CREATE TABLE purchase_lines (
    order_id text NOT NULL REFERENCES purchases,
    line integer NOT NULL,
    sku text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    unit_price bigint NOT NULL CHECK (unit_price >= 0),
    returned integer NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, line),
    CHECK (returned BETWEEN 0 AND quantity)
);

-- Returns applied, by the orders service's return id: a return's later updates (received,
-- settled) and redeliveries take nothing back twice.
CREATE TABLE purchase_returns (
    return_id text PRIMARY KEY,
    order_id text NOT NULL REFERENCES purchases,
    kind text NOT NULL,
    units integer NOT NULL,
    recorded_at timestamptz NOT NULL
);
