-- Stores and parcel lockers. Positions are whole micro-degrees (six decimal places, exact).
-- ``occupied`` counts the bookings holding a slot; it changes in the same transaction as the
-- booking that takes or frees the slot, and the CHECKs keep it within the capacity even
-- against a bug in the code.
CREATE TABLE points (
    point_id text PRIMARY KEY,
    market char(2) NOT NULL CHECK (market ~ '^[A-Z]{2}$'),
    kind text NOT NULL CHECK (kind IN ('store', 'locker')),
    name text NOT NULL,
    street text NOT NULL,
    postcode text NOT NULL,
    city text NOT NULL,
    latitude_e6 integer NOT NULL CHECK (latitude_e6 BETWEEN -90000000 AND 90000000),
    longitude_e6 integer NOT NULL CHECK (longitude_e6 BETWEEN -180000000 AND 180000000),
    time_zone text NOT NULL,
    opening_hours jsonb NOT NULL,
    capabilities text[] NOT NULL DEFAULT '{}',
    capacity integer CHECK (capacity > 0),
    occupied integer NOT NULL DEFAULT 0 CHECK (occupied >= 0),
    pickup_days smallint CHECK (pickup_days BETWEEN 1 AND 30),
    active boolean NOT NULL DEFAULT true,
    version bigint NOT NULL CHECK (version > 0),
    slots_version bigint NOT NULL DEFAULT 0 CHECK (slots_version >= 0),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT slots_within_capacity CHECK (capacity IS NULL OR occupied <= capacity),
    CONSTRAINT a_locker_has_slots CHECK (kind <> 'locker' OR capacity IS NOT NULL)
);
-- A search narrows to a market and a band of latitudes first, then computes distances.
CREATE INDEX points_by_market_latitude ON points (market, latitude_e6) WHERE active;

-- The great-circle distance in metres between two positions (haversine, mean earth radius):
-- the same formula as the domain's ``distance_m``, so a search sorts as the domain measures.
CREATE FUNCTION great_circle_m(
    lat1_e6 integer, lon1_e6 integer, lat2_e6 integer, lon2_e6 integer
) RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 2 * 6371008.8 * asin(least(1.0, sqrt(
        power(sin(radians((lat2_e6 - lat1_e6) / 1e6::float8) / 2), 2)
        + cos(radians(lat1_e6 / 1e6::float8)) * cos(radians(lat2_e6 / 1e6::float8))
          * power(sin(radians((lon2_e6 - lon1_e6) / 1e6::float8) / 2), 2))))
$$;

-- A slot of a point held for an order, and the parcel's life there. The pickup code is kept
-- only while the parcel waits: the customer reads it back, nobody needs it afterwards.
CREATE TABLE bookings (
    booking_id uuid PRIMARY KEY,
    point_id text NOT NULL REFERENCES points,
    order_id text NOT NULL,
    customer_id text NOT NULL,
    status text NOT NULL
        CHECK (status IN ('booked', 'arrived', 'collected', 'expired', 'released')),
    version bigint NOT NULL CHECK (version > 0),
    pickup_code text,
    booked_at timestamptz NOT NULL,
    arrived_at timestamptz,
    collect_by timestamptz,
    ended_at timestamptz,
    updated_at timestamptz NOT NULL,
    CONSTRAINT a_waiting_parcel_has_a_code
        CHECK ((status = 'arrived') = (pickup_code IS NOT NULL AND collect_by IS NOT NULL)),
    CONSTRAINT an_ended_booking_says_when
        CHECK ((status IN ('collected', 'expired', 'released')) = (ended_at IS NOT NULL))
);
-- An order holds at most one slot at a time; an ended booking makes room for the next.
CREATE UNIQUE INDEX bookings_one_live_per_order ON bookings (order_id)
    WHERE status IN ('booked', 'arrived');
CREATE INDEX bookings_by_order ON bookings (order_id);
CREATE INDEX bookings_at_point ON bookings (point_id, status, booking_id);
CREATE INDEX bookings_due_to_expire ON bookings (collect_by) WHERE status = 'arrived';
