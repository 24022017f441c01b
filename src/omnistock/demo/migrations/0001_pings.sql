CREATE TABLE pings (
    ping_id uuid PRIMARY KEY,
    stream text NOT NULL,
    sequence bigint NOT NULL CHECK (sequence >= 1),
    message text NOT NULL,
    sent_at timestamptz NOT NULL,
    UNIQUE (stream, sequence)
);

-- What the consumer applied: one row per ping, never two (the primary key is the proof the
-- crash tests check), with the arrival order per stream.
CREATE TABLE pongs (
    ping_id uuid PRIMARY KEY,
    stream text NOT NULL,
    sequence bigint NOT NULL,
    applied_order bigserial NOT NULL,
    sent_at_ns bigint NOT NULL,
    applied_at_ns bigint NOT NULL
);
CREATE INDEX pongs_stream ON pongs (stream, applied_order);
