-- The transactional outbox: events written in the same transaction as the state change that
-- caused them. The relay deletes a batch in id order, publishes it, and commits the delete only
-- once Kafka has acknowledged every message: a row here is an event not yet known to be
-- published. Kafka, not this table, is the log that is replayed.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL,
    topic text NOT NULL,
    message_key text NOT NULL,
    payload bytea NOT NULL,
    traceparent text,  -- W3C trace context of the writing request, for the Kafka headers
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Wake the relay at once instead of waiting for its next poll. NOTIFY folds identical
-- notifications of one transaction into one, so a batch of events costs one wake-up.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- The inbox: ids of events a consumer group has applied, written in the effect's transaction,
-- so that a redelivered event changes nothing.
CREATE TABLE inbox (
    consumer_group text NOT NULL,
    event_id uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);

-- Idempotency keys of write requests: the first answer is stored and replayed.
CREATE TABLE idempotency_keys (
    principal text NOT NULL,
    idempotency_key text NOT NULL,
    request_hash text NOT NULL,
    status_code integer NOT NULL,
    response_body bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, idempotency_key)
);
