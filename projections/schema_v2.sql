-- flashgate projections, schema version 2: what became of each order at the
-- fulfilment provider, folded from the order events on fg.ord.<sale>.<order>
-- (OrderAttemptFailed, OrderConfirmed, OrderFailed, OrderRequeued).
--
-- orders.status is now one of accepted (by the sale's writer, no outcome
-- yet), retrying (a call to the provider failed and is retried), confirmed
-- (the provider took it: final), failed (given up, in the dead-letter
-- stream) and pending (an operator requeued it after it failed).
--
--   reference     the provider's id of a confirmed order
--   attempts      the failed calls since the order was accepted or last
--                 requeued (0 until one fails; a confirmed order's calls
--                 less the one that succeeded)
--   last_error    the last failure reported, kept once the order moves on
--   failed_reason why it was given up (attempts, deadline, rejected), while
--                 it is failed
--   updated_at    the time of the last order event folded; NULL before one

ALTER TABLE orders ADD COLUMN reference TEXT;
ALTER TABLE orders ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN last_error TEXT;
ALTER TABLE orders ADD COLUMN failed_reason TEXT;
ALTER TABLE orders ADD COLUMN updated_at TEXT;
CREATE INDEX orders_sale_status ON orders (sale, status);
