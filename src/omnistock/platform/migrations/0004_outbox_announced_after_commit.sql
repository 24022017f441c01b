-- The writers announce committed outbox rows themselves, after their commit
-- (omnistock.platform.outbox.written): the relay of their own process is woken directly, a
-- replica's by a NOTIFY of its own. The trigger notified from inside every writing
-- transaction, and a transaction that notifies holds a cluster-wide lock from its commit until
-- its WAL is flushed, so every such commit waited for the one before it.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
