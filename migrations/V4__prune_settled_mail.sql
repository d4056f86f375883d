-- Pruning settled messages (`PRUNE_MAIL`) finds them by queue time without scanning the
-- outbox; only settled rows are indexed, so the claim path's index and writes stay as they were
-- until a message settles.
CREATE INDEX email_outbox_settled_by_queue_time ON email_outbox (queued_at) WHERE status <> 'pending';
