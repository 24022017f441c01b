-- A parcel nobody collected goes back to the sender: the order is cancelled (nothing was
-- charged) and the goods come back as a return of their own kind, restocked when received,
-- which is work for a cancelled order.
ALTER TABLE orders DROP CONSTRAINT orders_cancelled_has_no_step;
ALTER TABLE order_returns DROP CONSTRAINT order_returns_kind_check;
ALTER TABLE order_returns ADD CONSTRAINT order_returns_kind_check
    CHECK (kind IN ('trial', 'rma', 'uncollected'));
