-- The W3C trace context of the request that queued the message (its `traceparent`, version
-- 00), so that the dispatcher's delivery span can link back to that request's trace. NULL when
-- the process recorded no spans. It is not secret and is kept for the row's life: the row's
-- pruning, or the erasure of its account, takes it too.
--
-- The column is nullable without a default, so adding it rewrites nothing; the check scans the
-- table once, which the pruned outbox keeps small.
ALTER TABLE email_outbox
    ADD COLUMN trace_context text
    CONSTRAINT email_outbox_trace_context_is_a_traceparent
        CHECK (trace_context ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$');
