-- What a batch of reservations is planned against, in one round trip: the batch's SKU locks are
-- taken first, in sorted order, and everything is then read under them. (Inside a volatile
-- function each statement reads committed data afresh, so the reads see every writer that held
-- one of those locks before: in one plain statement they would read a snapshot taken before
-- the locks were granted.)
--
-- Rows are looked up one by one by primary key (LATERAL, kept apart by LIMIT so that the planner
-- does not fold it into a join): a few hundred probes, whatever its statistics say about the
-- tables (a hash join over the whole table was its choice for freshly filled ones).
--
-- Returned as one JSON document:
--   answers:  [principal, key, request_hash, status_code, response_body as text]: answers already
--             stored under the batch's Idempotency-Keys;
--   channels: [channel_id, availability_cap, max_units_per_customer,
--              [[location_id, priority, safety_stock, capabilities], ...] by priority]: the
--             requested channels and every channel sharing one of their locations (all whose
--             availability a reservation can move);
--   levels:   [sku, location_id, on_hand, reserved, allocated] at those channels' locations;
--   figures:  [channel_id, sku, available, version]: the published availability of those;
--   holds:    [channel_id, customer_id, sku, units]: what each named customer of a channel
--             with a per-customer limit has reserved or ordered since holds_since.
CREATE FUNCTION reservation_batch_state(
    lock_namespace text,
    skus text[],
    channel_ids text[],
    customer_channel_ids text[],
    customer_ids text[],
    holds_since timestamptz,
    principals text[],
    idempotency_keys text[]
) RETURNS json LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    state json;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(lock_namespace || ':' || key, 0))
    FROM (SELECT DISTINCT unnest(skus) AS key ORDER BY 1) AS ordered;

    WITH wanted AS (
        SELECT unnest(channel_ids) AS channel_id
        UNION
        SELECT neighbour.channel_id
        FROM sourcing_rules own
        JOIN sourcing_rules neighbour USING (location_id)
        WHERE own.channel_id = ANY(channel_ids)),
    sold AS (
        SELECT c.channel_id, c.availability_cap, c.max_units_per_customer
        FROM wanted JOIN channels c USING (channel_id)),
    rule AS (
        SELECT r.channel_id, r.location_id, r.priority, r.safety_stock, l.capabilities
        FROM sold JOIN sourcing_rules r USING (channel_id)
        JOIN locations l ON l.location_id = r.location_id),
    place AS (SELECT DISTINCT location_id FROM rule),
    sku AS (SELECT DISTINCT unnest(skus) AS sku),
    limited AS (
        SELECT DISTINCT w.channel_id, w.customer_id
        FROM unnest(customer_channel_ids, customer_ids) AS w(channel_id, customer_id)
        JOIN sold USING (channel_id)
        WHERE sold.max_units_per_customer IS NOT NULL)
    SELECT json_build_object(
        'answers', (
            SELECT coalesce(json_agg(json_build_array(k.principal, k.idempotency_key,
                        k.request_hash, k.status_code, convert_from(k.response_body, 'UTF8'))),
                   '[]')
            FROM unnest(principals, idempotency_keys) AS w(principal, idempotency_key),
            LATERAL (SELECT * FROM idempotency_keys k
                     WHERE k.principal = w.principal
                       AND k.idempotency_key = w.idempotency_key LIMIT 1) AS k),
        'channels', (
            SELECT coalesce(json_agg(json_build_array(s.channel_id, s.availability_cap,
                        s.max_units_per_customer, (
                            SELECT coalesce(json_agg(json_build_array(r.location_id, r.priority,
                                        r.safety_stock, r.capabilities) ORDER BY r.priority),
                                   '[]')
                            FROM rule r WHERE r.channel_id = s.channel_id))),
                   '[]')
            FROM sold s),
        'levels', (
            SELECT coalesce(json_agg(json_build_array(s.sku, s.location_id, s.on_hand,
                        s.reserved, s.allocated)), '[]')
            FROM sku, place,
            LATERAL (SELECT * FROM stock s
                     WHERE s.sku = sku.sku AND s.location_id = place.location_id LIMIT 1) AS s),
        'figures', (
            SELECT coalesce(json_agg(json_build_array(a.channel_id, a.sku, a.available,
                        a.version)), '[]')
            FROM sku, sold,
            LATERAL (SELECT * FROM availability a
                     WHERE a.channel_id = sold.channel_id AND a.sku = sku.sku LIMIT 1) AS a),
        'holds', (
            SELECT coalesce(json_agg(json_build_array(w.channel_id, w.customer_id, h.sku,
                        h.units)), '[]')
            FROM limited w,
            LATERAL (SELECT l.sku, sum(l.quantity)::int AS units
                     FROM reservations r JOIN reservation_lines l USING (reservation_id)
                     WHERE r.channel_id = w.channel_id AND r.customer_id = w.customer_id
                       AND r.status IN ('active', 'committed') AND r.created_at > holds_since
                     GROUP BY l.sku) AS h))
    INTO state;
    RETURN state;
END $$;
