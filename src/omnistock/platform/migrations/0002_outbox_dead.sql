-- Events Kafka refuses for good (too large, an invalid or forbidden topic) leave the outbox for
-- this table, with the reason, so that one bad row does not hold up every event behind it.
-- Nothing is lost: an operator fixes the cause and requeues them (`omnistock outbox requeue`).
CREATE TABLE outbox_dead (
    id bigint PRIMARY KEY,  -- the outbox id it had
    event_id uuid NOT NULL,
    topic text NOT NULL,
    message_key text NOT NULL,
    payload bytea NOT NULL,
    traceparent text,
    created_at timestamptz NOT NULL,
    reason text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);

