//! Every statement the store sends, in one place, so the round trips per operation can be read
//! off this file. Each is prepared once per connection (deadpool's statement cache).
//!
//! Parameters are cast where PostgreSQL could not infer their type (`INSERT … SELECT`), and
//! the code states are the texts of `migrations/V1__initial.sql`.

/// The account columns of a load: the user, the current code (the latest issued, if any) and
/// the issue times of its codes in the window. Followed by the `WHERE` on `u`.
///
/// The current code is the latest by issue time. Issue times only grow per account (the code
/// cooldown), but with a zero cooldown two codes could share one: then a replaced code is never
/// the current one, and the later id (UUID v7) wins.
macro_rules! load_account {
    ($where:literal) => {
        concat!(
            "SELECT u.id, u.email, u.password_hash, u.created_at, u.activated_at, u.version,
                    c.id, c.digest, c.issued_at, c.delivered_at, c.wrong_attempts, c.state,
                    ARRAY(SELECT r.issued_at FROM activation_codes AS r
                          WHERE r.user_id = u.id AND r.issued_at > $2
                          ORDER BY r.issued_at) AS recent_issues
             FROM users AS u
             LEFT JOIN LATERAL (
                 SELECT k.id, k.digest, k.issued_at, k.delivered_at, k.wrong_attempts, k.state
                 FROM activation_codes AS k
                 WHERE k.user_id = u.id
                 ORDER BY k.issued_at DESC, k.state = 'replaced', k.id DESC
                 LIMIT 1
             ) AS c ON true
             WHERE ",
            $where
        )
    };
}

/// `$1` email key, `$2` start of the recent-issues window (exclusive).
pub(crate) const ACCOUNT_BY_EMAIL: &str = load_account!("u.email_key = $1");

/// `$1` user id, `$2` start of the recent-issues window (exclusive).
pub(crate) const ACCOUNT_BY_ID: &str = load_account!("u.id = $1");

/// Writes the account's current code (insert or update) and queues its mail, each only when
/// given and `$condition` (SQL, after `AND`) holds. Shared by [`REGISTER`], [`SAVE_ACCOUNT`] and
/// [`SAVE_CODE_AND_MAIL`], with the same parameters `$1`–`$13`, bound by `params::CodeAndMail`
/// (a NULL code id: no code; a NULL mail id: no mail).
macro_rules! code_and_mail {
    ($condition:literal) => {
        concat!(
            "saved_code AS (
             INSERT INTO activation_codes
                 (id, user_id, digest, issued_at, delivered_at, wrong_attempts, state)
             SELECT $1::uuid, $2::uuid, $3::bytea, $4::timestamptz, $5::timestamptz,
                    $6::integer, $7::text
             WHERE $1::uuid IS NOT NULL AND ",
            $condition,
            "
             ON CONFLICT (id) DO UPDATE SET
                 digest = EXCLUDED.digest,
                 issued_at = EXCLUDED.issued_at,
                 delivered_at = EXCLUDED.delivered_at,
                 wrong_attempts = EXCLUDED.wrong_attempts,
                 state = EXCLUDED.state
             WHERE activation_codes.user_id = EXCLUDED.user_id
         ), queued_mail AS (
             INSERT INTO email_outbox
                 (id, user_id, code_id, recipient, code, status, attempts, queued_at,
                  next_attempt_at, trace_context)
             SELECT $8::uuid, $2::uuid, $9::uuid, $10::text, $11::text, 'pending', 0,
                    $12::timestamptz, $12::timestamptz, $13::text
             WHERE $8::uuid IS NOT NULL AND ",
            $condition,
            "
         )"
        )
    };
}

/// A new account: the user, its code and its mail in one statement (so one implicit
/// transaction and one round trip). Parameters: `params::AccountWrite::register_params`.
///
/// An existing id or email key fails with a unique violation on `users_pkey` or
/// `users_email_key`: the conflict. Foreign keys are checked at the end of the statement, so
/// the code and the mail may reference the user inserted beside them.
pub(crate) const REGISTER: &str = concat!(
    "WITH new_user AS (
         INSERT INTO users
             (id, email, email_key, password_hash, created_at, activated_at, version)
         VALUES ($2::uuid, $14::text, $15::text, $16::text, $17::timestamptz,
                 $18::timestamptz, 1)
     ), ",
    code_and_mail!("true"),
    " SELECT 1"
);

/// Saves an existing account: the user at the expected version (bumping it), every live code
/// other than the current one marked replaced, the account's pending mail whose code is not
/// live after the save cancelled (its clear code wiped), and the current code and new mail of
/// `code_and_mail!`. Returns how many users it wrote: 0 means the version moved on (or the user
/// is gone), the conflict, and then nothing else is written either.
///
/// One statement, so one implicit transaction and one round trip, whenever the code it writes
/// is not live: an activation, a code killed by wrong guesses, a new password hash. A new live
/// code would trip the one-live-code-per-user index if it were inserted before the old live
/// code is marked replaced, and the order of a statement's parts is not defined; so a save that
/// writes a live code sends this without its code and mail (`$1` and `$8` NULL) and then
/// [`SAVE_CODE_AND_MAIL`], in one transaction.
///
/// Mail to cancel: once the save is done, every code but the current one (`$20`) is dead
/// (`replaced` kills the live ones), and the current one is dead or used when `$21` says so. So
/// a pending message is cancelled when it carries another code, or the current code in a state
/// other than live. The save's own new mail is not among them: the statement's parts all see
/// the rows as they were before it.
///
/// The messages are locked `FOR UPDATE SKIP LOCKED` (index `email_outbox_by_user`,
/// `migrations/V5__erase_accounts.sql`): one a dispatcher is settling at this very moment
/// is left to it rather than waited for. `finish_mail` locks message, then user, then code,
/// and this statement holds the user: waiting for the message could deadlock. The dispatcher
/// settles such a message itself, or claims it again later with `code_alive` false.
///
/// Parameters: `params::AccountWrite::save_params` or `save_user_params`: `$1`–`$18` as for
/// [`REGISTER`], `$19` the expected version, `$20` the current code id (NULL: kill and cancel
/// nothing), `$21` its state as saved.
pub(crate) const SAVE_ACCOUNT: &str = concat!(
    "WITH saved_user AS (
         UPDATE users SET
             email = $14, email_key = $15, password_hash = $16, created_at = $17,
             activated_at = $18, version = version + 1
         WHERE id = $2 AND version = $19
         RETURNING id
     ), replaced AS (
         UPDATE activation_codes SET state = 'replaced'
         WHERE user_id IN (SELECT id FROM saved_user)
           AND state = 'live'
           AND id <> $20::uuid
     ), doomed AS (
         SELECT id FROM email_outbox
         WHERE user_id = $2
           AND status = 'pending'
           AND (code_id <> $20::uuid OR $21::text <> 'live')
           AND EXISTS (SELECT FROM saved_user)
         FOR UPDATE SKIP LOCKED
     ), cancelled AS (
         UPDATE email_outbox AS o SET
             status = 'cancelled', code = NULL, lease_until = NULL, claim = NULL
         FROM doomed
         WHERE o.id = doomed.id
     ), ",
    code_and_mail!("EXISTS (SELECT FROM saved_user)"),
    " SELECT count(*) FROM saved_user"
);

/// The second statement of a save that writes a live code, sent after [`SAVE_ACCOUNT`] (without
/// its code and mail) in the same transaction: by then no other code is live, so the new live
/// code never trips the one-live-code-per-user index. Parameters: `params::CodeAndMail`.
pub(crate) const SAVE_CODE_AND_MAIL: &str = concat!("WITH ", code_and_mail!("true"), " SELECT 1");

/// Claims due mail: one statement, so the rows are locked (skipping rows another claimer
/// holds), leased and counted atomically. `$1` now, `$2` lease end, `$3` most messages.
pub(crate) const CLAIM_MAIL: &str = "
    WITH due AS (
        SELECT id FROM email_outbox
        WHERE status = 'pending'
          AND next_attempt_at <= $1
          AND (lease_until IS NULL OR lease_until <= $1)
        ORDER BY queued_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE email_outbox AS o SET
            lease_until = $2, claim = gen_random_uuid(), attempts = o.attempts + 1
        FROM due
        WHERE o.id = due.id
        RETURNING o.id, o.claim, o.user_id, o.recipient, o.code, o.code_id, o.attempts,
                  o.queued_at, o.trace_context
    )
    SELECT m.id, m.claim, m.user_id, m.recipient, m.code, m.code_id, m.attempts, m.queued_at,
           coalesce(k.state = 'live', false) AS code_alive, m.trace_context
    FROM claimed AS m
    LEFT JOIN activation_codes AS k ON k.id = m.code_id
    ORDER BY m.queued_at, m.id";

/// Settles claimed messages in one statement, each only under its current claim:
/// `$1` ids, `$2` claims, `$3` outcomes (`sent`, `retry`, `failed` or `cancelled`), `$4` the
/// time each carries (accepted at for `sent`, next attempt at for `retry`, else NULL), `$5` the
/// error (`retry` and `failed`, else NULL), one element per message (bound by
/// `params::Settlements`). Returns the ids it settled; a message missing from them lost its
/// claim and was left as it was.
///
/// A sent message marks its code delivered from its acceptance (unless the code died meanwhile,
/// or was delivered before: at-least-once delivery does not extend the first acceptance); a
/// failed one kills its live code; either bumps its user's version, so a save that loaded the
/// account before sees the change. Retried and cancelled messages change only themselves.
///
/// Locks are taken message, then user, then code, like a save's user-then-code; the users in
/// id order, so two replicas settling messages of the same users cannot deadlock.
pub(crate) const FINISH_MAIL: &str = "
    WITH outcome AS (
        SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[])
            AS o(id, claim, outcome, at, error)
    ), settled AS (
        UPDATE email_outbox AS m SET
            lease_until = NULL,
            claim = NULL,
            status = CASE WHEN o.outcome = 'retry' THEN m.status ELSE o.outcome END,
            code = CASE WHEN o.outcome = 'retry' THEN m.code END,
            sent_at = CASE WHEN o.outcome = 'sent' THEN o.at ELSE m.sent_at END,
            next_attempt_at = CASE WHEN o.outcome = 'retry' THEN o.at ELSE m.next_attempt_at END,
            last_error = coalesce(o.error, m.last_error)
        FROM outcome AS o
        WHERE m.id = o.id AND m.claim = o.claim AND m.status = 'pending'
        RETURNING m.id, m.user_id, m.code_id, o.outcome, o.at
    ), users_locked AS (
        SELECT id FROM users
        WHERE id IN (SELECT user_id FROM settled WHERE outcome IN ('sent', 'failed'))
        ORDER BY id
        FOR UPDATE
    ), bumped AS (
        UPDATE users SET version = users.version + 1
        FROM users_locked WHERE users.id = users_locked.id
        RETURNING users.id
    ), coded AS (
        UPDATE activation_codes AS k SET
            delivered_at = CASE WHEN s.outcome = 'sent'
                THEN coalesce(k.delivered_at, s.at) ELSE k.delivered_at END,
            state = CASE WHEN s.outcome = 'failed' THEN 'undeliverable' ELSE k.state END
        FROM settled AS s
        WHERE k.id = s.code_id
          AND k.state = 'live'
          AND s.outcome IN ('sent', 'failed')
          AND s.user_id IN (SELECT id FROM bumped)
    )
    SELECT id FROM settled";

/// Messages waiting to be sent, due or not (an index-only count on the pending index).
pub(crate) const OUTBOX_DEPTH: &str = "SELECT count(*) FROM email_outbox WHERE status = 'pending'";

/// A login's read: always one row, the account's columns as [`ACCOUNT_BY_EMAIL`] gives them
/// (all NULL when there is no account to give), then the end of the first window closed,
/// if any, in the order of the keys given; no account is read when one is. `$1` email key
/// (NULL: read no account), `$2` start of the recent-issues window (exclusive), `$3` throttle
/// keys, `$4` the most events each allows, `$5` now.
pub(crate) const LOGIN_STATE: &str = concat!(
    "WITH closed AS (
         SELECT t.window_end
         FROM unnest($3::text[], $4::bigint[]) WITH ORDINALITY AS k(key, max, position)
         JOIN throttles AS t ON t.key = k.key AND t.window_end > $5 AND t.hits >= k.max
         ORDER BY k.position
         LIMIT 1
     )
     SELECT account.*, (SELECT window_end FROM closed)
     FROM (SELECT) AS one
     LEFT JOIN LATERAL (",
    load_account!("u.email_key = $1 AND NOT EXISTS (SELECT FROM closed)"),
    ") AS account ON true"
);

/// Counts one event for a key, atomically (the row lock of `ON CONFLICT DO UPDATE`):
/// a window that is over (or a new key) starts again at `$new_end` with this event, otherwise
/// the event is added. Returns the row's `window_end, hits`.
///
/// `hits` counts refused events too, so the statement can report whether this event was over
/// the limit from the row it leaves (RETURNING only sees the new row): the event was refused
/// exactly when the window went on and `hits` now exceeds the limit. [`LOGIN_STATE`]
/// compares `hits >= max`, which is the memory store's `count >= max` since that count is
/// `min(hits, max)`.
macro_rules! count_hit {
    ($key:literal, $now:literal, $new_end:literal) => {
        concat!(
            "INSERT INTO throttles AS t (key, window_end, hits) VALUES (",
            $key,
            ", ",
            $new_end,
            ", 1)
             ON CONFLICT (key) DO UPDATE SET
                 window_end = CASE WHEN t.window_end <= ",
            $now,
            " THEN EXCLUDED.window_end ELSE t.window_end END,
                 hits = CASE WHEN t.window_end <= ",
            $now,
            " THEN 1 ELSE t.hits + 1 END
             RETURNING window_end, hits"
        )
    };
}

/// One event counted (`count_hit!`): `$1` key, `$2` now, `$3` end of a new window.
pub(crate) const THROTTLE_HIT: &str = count_hit!("$1", "$2", "$3");

/// What a registration needs before its hash, in one statement: one event counted for the key
/// `$3` (`count_hit!`, `$4` now, `$5` end of a new window) and, unless that event was refused
/// (`hits` above `$6`), the account with email key `$1` (`$2` start of the recent-issues
/// window), with the refused window's end as the last column (see [`LOGIN_STATE`]). The
/// account is read from the snapshot the statement started with, which the count, on another
/// table, does not change.
pub(crate) const REGISTRATION_STATE: &str = concat!(
    "WITH hit AS (",
    count_hit!("$3", "$4", "$5"),
    "), refused AS (
         SELECT window_end FROM hit WHERE hits > $6
     )
     SELECT account.*, (SELECT window_end FROM refused)
     FROM (SELECT) AS one
     LEFT JOIN LATERAL (",
    load_account!("u.email_key = $1 AND NOT EXISTS (SELECT FROM refused)"),
    ") AS account ON true"
);

/// Deletes up to `$2` settled messages queued before `$1` (`PRUNE_BATCH`), so one statement
/// never holds many row locks; the pruner repeats it until a batch comes back short.
pub(crate) const PRUNE_MAIL: &str = "
    DELETE FROM email_outbox WHERE id IN (
        SELECT id FROM email_outbox WHERE status <> 'pending' AND queued_at < $1 LIMIT $2
    )";

/// Deletes up to `$2` throttle windows that ended by `$1`. A window that a concurrent hit
/// reopens is re-checked by the DELETE and kept.
pub(crate) const PRUNE_THROTTLES: &str = "
    DELETE FROM throttles WHERE key IN (
        SELECT key FROM throttles WHERE window_end <= $1 LIMIT $2
    )";

/// Deletes up to `$2` accounts still pending whose last registration or takeover (`created_at`)
/// was before `$1`; their codes and messages go with them (`ON DELETE CASCADE`). Rows a
/// concurrent save holds are skipped, not waited for: the save wins, and the next prune looks
/// again. The outer condition re-checks each row once it is locked.
pub(crate) const PRUNE_PENDING_ACCOUNTS: &str = "
    DELETE FROM users WHERE id IN (
        SELECT id FROM users WHERE activated_at IS NULL AND created_at < $1
        ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED
    ) AND activated_at IS NULL AND created_at < $1";

/// Erases the account `$1` at version `$2`, with its codes and messages (`ON DELETE CASCADE`).
/// No row: the account is gone or changed since it was loaded.
pub(crate) const DELETE_ACCOUNT: &str = "DELETE FROM users WHERE id = $1 AND version = $2";

/// Whether a message carrying code `$1` is being sent at `$2`: pending, under a live lease
/// (index `email_outbox_by_code`).
pub(crate) const MAIL_BEING_SENT: &str = "
    SELECT EXISTS (
        SELECT 1 FROM email_outbox
        WHERE code_id = $1 AND status = 'pending' AND lease_until > $2
    )";

/// Rows one prune statement deletes at most.
pub(crate) const PRUNE_BATCH: i64 = 1000;

/// Whether the database answers.
pub(crate) const PING: &str = "SELECT 1";

/// Migrations run under this session-level advisory lock ("Registra" in ASCII), so replicas
/// starting together apply them one after the other.
pub(crate) const MIGRATION_LOCK: i64 = 0x5265_6769_7374_7261;
