//! Registrar's production store: the application's [`Store`] port on PostgreSQL, with
//! tokio-postgres (over rustls when the URL asks for TLS), a deadpool connection pool and
//! refinery migrations from the top-level `migrations/` folder. It behaves exactly like the in-memory store: both run the store
//! contract suite of `registrar-application`.
//!
//! ```no_run
//! use registrar_adapters_postgres::{PgSettings, PgStore};
//!
//! # async fn start() -> Result<(), registrar_adapters_postgres::SetupError> {
//! let store = PgStore::new(&PgSettings::new("postgres://registrar@db/registrar"))?;
//! store.migrate().await?; // `registrar migrate`, and `registrar serve` at start-up
//! # Ok(()) }
//! ```
//!
//! # The schema (`migrations/V1__initial.sql` and the migrations after it)
//! - `users`: the primary key `users_pkey` and the unique `users_email_key` on `email_key`,
//!   the address in ASCII lower case ([`Email::key`](registrar_domain::Email::key)); a check
//!   ties the key to the address, so they cannot disagree. A new account that hits either
//!   unique constraint is [`SaveError::Conflict`]. `activated_at` is NULL while pending;
//!   `version` (positive) is the optimistic-concurrency counter.
//! - `activation_codes`: the 32-byte HMAC digest (checked), never the code; `state` is one of
//!   `live`, `used`, `replaced`, `too_many_attempts`, `undeliverable` (checked), and a used
//!   code must have been delivered. At most one live code per account, by a partial unique
//!   index `(user_id) WHERE state = 'live'`: a save sends the statement that marks the other
//!   live codes replaced *before* the statement that writes the new code, in one transaction,
//!   so the index never fails a correct save and turns a wrong one into an error instead of a
//!   second usable code. (Not one statement with CTEs: sibling data-modifying CTEs run in an
//!   unspecified order, and `CockroachDB` refuses two modifications of one table in a
//!   statement.) Index `(user_id, issued_at)` serves the load (latest code, codes of the
//!   last 24 hours).
//! - `email_outbox`: the code in clear only while `pending` (a check ties `code IS NOT NULL` to
//!   the status, and the code is four digits); lease and claim are set together and only while
//!   pending; `sent_at` exactly when sent; `trace_context` (V6), the request's `traceparent`
//!   or NULL, checked to be one in version `00` form (a value that does not parse back gives
//!   no link, never an error). Foreign keys to the user and the code. The partial
//!   index `(queued_at, id) WHERE status = 'pending'` serves the claim (oldest due first) and
//!   the pending count, and holds only the backlog; the indexes `(user_id)` and `(code_id)`
//!   (V5, replacing V2's pending-only `(user_id)`) serve a save's cancellation of the
//!   account's mail whose code died, so a save never scans the backlog, which grows while the
//!   mail server is down, and the cascades that erase an account's messages; the partial
//!   index `(queued_at) WHERE status <> 'pending'` (V4) lets pruning find settled messages
//!   without scanning the table, and `(created_at) WHERE activated_at IS NULL` on `users` (V5)
//!   lets it find abandoned accounts.
//! - `throttles`: `key` → `window_end`, `hits`. `hits` counts refused events too, so one
//!   `INSERT … ON CONFLICT DO UPDATE … RETURNING` can tell whether *this* event was over the
//!   limit (see `sql::THROTTLE_HIT`); what the port reports is exactly the memory store's.
//!   Refused events therefore write the row (a HOT update).
//!
//! Deleting an account (erasure, or the purge of abandoned ones) deletes the `users` row and
//! lets `ON DELETE CASCADE` take its codes and messages, each found through an index.
//! `prune` deletes settled outbox rows past the retention, throttle rows whose window is over
//! and accounts left pending past theirs, in batches of 1,000 rows per statement so that no
//! statement holds many row locks; pending accounts that a concurrent save holds are skipped
//! (`FOR UPDATE SKIP LOCKED`) and looked at again by the next prune.
//! Times are `timestamptz`; PostgreSQL keeps microseconds, so times read back are truncated to
//! the microsecond.
//!
//! # TLS
//! Configured entirely by libpq's parameters in the URL, so that the URL a provider gives
//! works as pasted (`?sslmode=verify-full&sslrootcert=/etc/registrar/db-ca.pem`), over rustls
//! (ring) for every connection: the pool's and the migrations'.
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (when absent) | if the server accepts it, else plain | not checked (*) |
//! | `require` | always | not checked (*) |
//! | `verify-ca` | always | must chain to a trusted root; any host name |
//! | `verify-full` | always | must chain to a trusted root and name the host connected to |
//!
//! `require` is libpq's: encryption against eavesdroppers, but anyone on the path can present
//! a certificate. With SCRAM passwords, adding `channel_binding=require` binds the login to
//! the TLS session, so a machine in the middle cannot complete it (without it, that machine
//! could ask for the password in clear). (*) As in libpq, when `sslrootcert` names a file,
//! `prefer` and `require` check the chain too.
//! `sslrootcert` is a PEM file of trusted roots; without it the `verify-*` modes trust the
//! operating system's store; `sslrootcert=system` means that store and implies (and
//! requires) `verify-full`, as in libpq 16. With `verify-full` the host name checked is the
//! URL's host; `hostaddr=` can say where to connect instead. An unknown `sslmode`, an empty or
//! unreadable root file, and client certificates (`sslcert`, `sslkey`: not supported) are
//! [`SetupError::Settings`] at start-up. Unlike libpq, `~/.postgresql/` is never read, and
//! `prefer` does not retry in plain text after a failed handshake.
//!
//! # Round trips per operation
//! Statements are prepared once per connection and cached.
//! - `account_by_email` / `account_by_id`: one query (user, current code via a lateral join,
//!   recent issue times as an array).
//! - `save` of a new account: one statement (user, code and mail in CTEs), its own transaction.
//! - `save` of an existing account: `BEGIN`; the user at the expected version plus the
//!   replacement of other live codes plus the cancellation of the account's pending mail whose
//!   code is not live after the save (clear code wiped), and the code upsert plus the new mail,
//!   sent together; then `COMMIT`: three round trips. The version check is `UPDATE … WHERE id
//!   = $1 AND version = $2`: no row written is [`SaveError::Conflict`]. The cancellation
//!   locks the messages `FOR UPDATE SKIP LOCKED`: a message that a `finish_mail` holds at that
//!   moment (it locks message, then user; the save holds the user) is left to the dispatcher
//!   rather than risking a deadlock.
//! - `claim_mail`: one statement (`FOR UPDATE SKIP LOCKED` in a CTE, lease, claim token from
//!   `gen_random_uuid()`, attempt count, joined to the code's state).
//! - `finish_mail`: one statement for all the outcomes given (bound as arrays), checking
//!   each message's claim token and that it is pending; for `Sent` and `Failed` it also
//!   updates the code and bumps the user's version, each step reading the previous one's
//!   output (lock order: messages, users in id order, codes).
//! - `login_state`: one statement, the throttle windows first; it reads the account only when
//!   none of them is closed.
//! - `registration_state`: one statement, the client's registration counted first; it reads
//!   the account only when that count was not refused (without a throttle, `account_by_email`).
//! - `outbox_depth`, `throttle_hit`, `ping`: one statement each.
//!
//! # Errors
//! Connection refused/reset/closed, pool and operation time-outs, SQLSTATE class `08`,
//! `57P01`–`57P03`, `53300` and `57014` are [`StoreError::Unavailable`]. Except after a
//! statement timeout, the connection that saw it is closed instead of returned to the pool,
//! and so are the idle ones (after a restart or failover they are dead too); the pool opens
//! fresh connections by itself when the database is back.
//! Everything else is [`StoreError::Internal`]. Either way the error's source names the
//! operation and, for a server error, the SQLSTATE and the server's primary message, never SQL
//! text or the server's DETAIL; under a broken connection it keeps the driver's error (and the
//! I/O or TLS error beneath) as its own source, so the logged chain shows why. That
//! includes TLS refusals (a certificate that `sslmode`/`sslrootcert` do not accept, a server
//! without TLS under `require`): they need the settings or the certificate fixed, not time.
//! Note: tokio-postgres logs statements *with their parameters* at `debug` level through the
//! `log` crate; keep `tokio_postgres` at `info` or above in production log filters.
//!
//! # PostgreSQL-compatible distributed databases
//! The SQL sticks to what `CockroachDB` and `YugabyteDB` also accept where that costs nothing.
//! Where it does not:
//! - the migration lock uses `pg_advisory_lock`, which `CockroachDB` does not provide (run
//!   `registrar migrate` once, before the replicas start);
//! - `lower(email COLLATE "C")` in a check: `CockroachDB` may need the check dropped (the
//!   adapter always writes the key itself);
//! - `FOR UPDATE SKIP LOCKED` needs `CockroachDB` 23.2+ / `YugabyteDB` 2.18+;
//! - the session options `statement_timeout` and `idle_in_transaction_session_timeout` are
//!   passed as connection options, which some proxies (`PgBouncer`) refuse.
#![forbid(unsafe_code)]

mod connect;
mod error;
mod migrate;
mod params;
mod rows;
mod settings;
mod sql;
mod store;
mod tls;

pub use error::SetupError;
pub use settings::PgSettings;
pub use store::PgStore;

#[cfg(doc)]
use registrar_application::ports::{SaveError, Store, StoreError};
