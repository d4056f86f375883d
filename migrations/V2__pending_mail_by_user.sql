-- A save cancels the account's pending mail whose code is no longer live (see SAVE_USER in
-- crates/adapters-postgres/src/sql.rs), so it looks up pending mail by user. Only pending rows
-- are indexed, as in email_outbox_pending_by_queue_order: the index stays as small as the
-- backlog, which is what grows while the mail server is down. Without it each such save would
-- scan the whole backlog while it holds the user's row lock.
CREATE INDEX email_outbox_pending_by_user ON email_outbox (user_id) WHERE status = 'pending';
