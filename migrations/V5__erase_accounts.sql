-- Erasing accounts: `DELETE /v1/users/me` and the purge of accounts never activated.
--
-- The purge (`PRUNE_PENDING_ACCOUNTS`) finds pending accounts by the time of their last
-- registration or takeover without scanning every account; only pending rows are indexed.
CREATE INDEX users_pending_by_created_at ON users (created_at) WHERE activated_at IS NULL;

-- Deleting a user deletes its codes and messages by cascade, and deleting a code deletes the
-- messages that carry it: each cascade looks the messages up by the foreign key, settled ones
-- included, so both keys need a whole index. The one by user replaces V2's index of pending
-- messages by user, which served the same lookups for pending rows only.
CREATE INDEX email_outbox_by_user ON email_outbox (user_id);
CREATE INDEX email_outbox_by_code ON email_outbox (code_id);
DROP INDEX email_outbox_pending_by_user;
