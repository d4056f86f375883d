-- Registrar's schema: accounts, their activation codes, the email outbox and throttle counters.
--
-- Applied by refinery (embedded in registrar-adapters-postgres) under an advisory lock, in one
-- transaction. Every time is a timestamptz. The constraints make the bad states the domain rules
-- out impossible to store; the indexes are the ones the adapter's queries need, and no more.
-- The reasoning for each is in crates/adapters-postgres/src/lib.rs ("The schema").

CREATE TABLE users (
    id            uuid        NOT NULL,
    -- The address as entered: trimmed, domain lower-cased, local part in its own case.
    email         text        NOT NULL,
    -- What uniqueness is decided on: the address in ASCII lower case (`Email::key`).
    email_key     text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL,
    -- NULL while the account is pending.
    activated_at  timestamptz,
    -- Optimistic concurrency: every save checks and bumps it.
    version       bigint      NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_email_key UNIQUE (email_key),
    CONSTRAINT users_email_key_is_the_lower_case_email CHECK (email_key = lower(email COLLATE "C")),
    CONSTRAINT users_email_length CHECK (length(email) BETWEEN 3 AND 254),
    CONSTRAINT users_password_hash_not_empty CHECK (password_hash <> ''),
    CONSTRAINT users_version_positive CHECK (version > 0)
);

CREATE TABLE activation_codes (
    id             uuid        NOT NULL,
    user_id        uuid        NOT NULL,
    -- HMAC-SHA256 of the code under the server secret: never the code itself.
    digest         bytea       NOT NULL,
    issued_at      timestamptz NOT NULL,
    -- When the mail server accepted the email carrying it; the code is usable from then.
    delivered_at   timestamptz,
    wrong_attempts integer     NOT NULL,
    state          text        NOT NULL,
    CONSTRAINT activation_codes_pkey PRIMARY KEY (id),
    CONSTRAINT activation_codes_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT activation_codes_digest_is_sha256 CHECK (octet_length(digest) = 32),
    CONSTRAINT activation_codes_wrong_attempts_not_negative CHECK (wrong_attempts >= 0),
    CONSTRAINT activation_codes_state_known CHECK (
        state IN ('live', 'used', 'replaced', 'too_many_attempts', 'undeliverable')
    ),
    -- A code is only ever used while usable, and it is usable only once delivered.
    CONSTRAINT activation_codes_used_only_after_delivery CHECK (state <> 'used' OR delivered_at IS NOT NULL)
);

-- Loading an account: its current (latest) code and the issue times of the last 24 hours.
CREATE INDEX activation_codes_by_user_and_issue_time ON activation_codes (user_id, issued_at);

-- One live code per account. A save kills the other live codes in a statement that runs before
-- the one that writes the new code, so the save path never trips over it.
CREATE UNIQUE INDEX activation_codes_one_live_per_user ON activation_codes (user_id) WHERE state = 'live';

CREATE TABLE email_outbox (
    id              uuid        NOT NULL,
    user_id         uuid        NOT NULL,
    code_id         uuid        NOT NULL,
    recipient       text        NOT NULL,
    -- The code in clear, only while the message is pending; wiped once it is settled.
    code            text,
    status          text        NOT NULL,
    -- Delivery attempts so far, the one under way included.
    attempts        integer     NOT NULL DEFAULT 0,
    queued_at       timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    -- A claim is a lease: the claimer holds the message until lease_until, proven by claim.
    lease_until     timestamptz,
    claim           uuid,
    last_error      text,
    sent_at         timestamptz,
    CONSTRAINT email_outbox_pkey PRIMARY KEY (id),
    CONSTRAINT email_outbox_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT email_outbox_code_fkey FOREIGN KEY (code_id) REFERENCES activation_codes (id) ON DELETE CASCADE,
    CONSTRAINT email_outbox_status_known CHECK (status IN ('pending', 'sent', 'failed', 'cancelled')),
    CONSTRAINT email_outbox_code_is_four_digits CHECK (code ~ '^[0-9]{4}$'),
    CONSTRAINT email_outbox_code_in_clear_only_while_pending CHECK ((code IS NOT NULL) = (status = 'pending')),
    CONSTRAINT email_outbox_attempts_not_negative CHECK (attempts >= 0),
    CONSTRAINT email_outbox_lease_and_claim_together CHECK ((lease_until IS NULL) = (claim IS NULL)),
    CONSTRAINT email_outbox_claims_only_while_pending CHECK (status = 'pending' OR claim IS NULL),
    CONSTRAINT email_outbox_sent_at_when_sent CHECK ((sent_at IS NOT NULL) = (status = 'sent'))
);

-- Claiming due mail, oldest first (and counting what is pending): only pending rows are indexed,
-- so the index stays as small as the backlog.
CREATE INDEX email_outbox_pending_by_queue_order ON email_outbox (queued_at, id) WHERE status = 'pending';

CREATE TABLE throttles (
    key        text        NOT NULL,
    -- The current window ends here; the next event after it starts a new window.
    window_end timestamptz NOT NULL,
    -- Events seen in the window, refused ones included (the adapter's docs say why).
    hits       bigint      NOT NULL,
    CONSTRAINT throttles_pkey PRIMARY KEY (key),
    CONSTRAINT throttles_hits_positive CHECK (hits > 0)
);
