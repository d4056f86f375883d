//! `PgStore`: the application's `Store` port on a pool of PostgreSQL connections.
//!
//! Every operation runs under one deadline (the statement timeout) covering the wait for a
//! pooled connection, connecting and the statements, so it never hangs. A connection that
//! failed as unreachable or ran out of time is taken out of the pool and closed rather than
//! handed to the next request, together with the idle ones; the pool opens fresh ones when
//! the database is back.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::future::{join, try_join};
use registrar_application::ports::{
    AccountChange, ClaimedMail, Limit, Lookup, MailOutcome, Pruned, SaveError, Store, StoreError,
    ThrottleKey, Versioned,
};
use registrar_domain::{CodeId, CodePolicy, Email, UserId};
use tokio::{
    runtime::Handle,
    time::{Instant, error::Elapsed, timeout_at},
};
use tokio_postgres::{Row, Statement};
use uuid::Uuid;

use crate::{
    PgSettings, SetupError,
    connect::OnRuntime,
    error::{Failure, PortError},
    params::{AccountWrite, Param, Settlements},
    rows::{self, in_range, to_version},
    sql,
    tls::Tls,
};

/// The PostgreSQL store. Cheap to clone: clones share one pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    inner: Arc<Inner>,
}

struct Inner {
    settings: PgSettings,
    /// The sessions' configuration, for the migration's connection (outside the pool).
    config: tokio_postgres::Config,
    /// Its TLS connector, the pool's.
    tls: Tls,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("settings", &self.inner.settings)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// A store on the database of `settings`. Connects lazily: the first operation (or
    /// [`migrate`](Self::migrate)) opens the first connection. Built inside a tokio runtime,
    /// its connections are opened and run on that runtime, whichever runtime uses them.
    ///
    /// # Errors
    /// [`SetupError::Settings`] when the URL does not parse, a setting is out of range, or its
    /// TLS parameters are unknown or inconsistent, or name a root file that cannot be read or
    /// holds no certificate.
    pub fn new(settings: &PgSettings) -> Result<Self, SetupError> {
        let (config, tls) = settings.pg_config()?;
        let manager_config = ManagerConfig {
            // No test query per checkout: a closed connection is noticed by `is_closed`,
            // and one that fails or stalls is thrown away by the operation that saw it.
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match Handle::try_current() {
            Ok(runtime) => Manager::from_connect(
                config.clone(),
                OnRuntime {
                    runtime,
                    tls: tls.clone(),
                },
                manager_config,
            ),
            Err(_) => Manager::from_config(config.clone(), tls.clone(), manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.pool_wait_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| {
                SetupError::Settings(format!("the connection pool cannot be built: {e}"))
            })?;
        Ok(Self {
            pool,
            inner: Arc::new(Inner {
                settings: settings.clone(),
                config,
                tls,
            }),
        })
    }

    /// The settings the store was built from.
    #[must_use]
    pub fn settings(&self) -> &PgSettings {
        &self.inner.settings
    }

    /// Applies the migrations of `migrations/` that the database does not have yet, in one
    /// transaction, under a PostgreSQL advisory lock: replicas starting together wait for one
    /// another, and running it again (or on an up-to-date database) changes nothing.
    ///
    /// It uses a connection of its own, without the statement timeout (a migration may take
    /// longer than a request), and closes it afterwards, which also releases the lock should
    /// anything fail half-way.
    ///
    /// # Errors
    /// [`SetupError::Connect`] when the database cannot be reached, [`SetupError::Migration`]
    /// when a migration fails (nothing of that run is kept) or the applied history diverges
    /// from the embedded one.
    #[tracing::instrument(name = "migrate database", skip_all)]
    pub async fn migrate(&self) -> Result<(), SetupError> {
        crate::migrate::run(
            &self.inner.config,
            self.inner.tls.clone(),
            self.inner.settings.connect_timeout,
        )
        .await
    }

    /// Runs `operation` on a pooled connection (see [`on_connection`](Self::on_connection));
    /// its failure becomes the port's error, naming the operation `op`.
    async fn run<T, E: PortError>(
        &self,
        op: &'static str,
        operation: impl AsyncFnOnce(&mut Object) -> Result<T, Failure>,
    ) -> Result<T, E> {
        self.run_with(op, Ok(()), async |connection, ()| {
            operation(connection).await
        })
        .await
    }

    /// [`run`](Self::run) for an operation whose `input` was computed beforehand and may be
    /// out of range (a time past what the database holds, a version past `bigint`): then
    /// that is the operation's failure, and no connection is taken.
    async fn run_with<I, T, E: PortError>(
        &self,
        op: &'static str,
        input: Result<I, Failure>,
        operation: impl AsyncFnOnce(&mut Object, I) -> Result<T, Failure>,
    ) -> Result<T, E> {
        let outcome = match input {
            Ok(input) => {
                self.on_connection(async |connection| operation(connection, input).await)
                    .await
            }
            Err(invalid) => Err(invalid),
        };
        outcome.map_err(|failure| E::from_failure(failure, op))
    }

    /// Runs `operation` on a pooled connection under one deadline (the statement timeout),
    /// which covers the wait for the connection too, then settles the connection.
    async fn on_connection<T>(
        &self,
        operation: impl AsyncFnOnce(&mut Object) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let deadline = Instant::now() + self.inner.settings.statement_timeout;
        let mut connection = match timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(Failure::Pool(error)),
            Err(_) => return Err(Failure::TimedOut),
        };
        let outcome = timeout_at(deadline, operation(&mut connection)).await;
        self.settle(connection, outcome)
    }

    /// Ends an operation on `connection`. A connection that is broken, or in an unknown state
    /// after a time-out, leaves the pool for good (and closes) instead of going back to it; so
    /// do the idle ones, which a server restart or failover has most likely broken as well
    /// (finding that out one request at a time would fail one request per connection).
    fn settle<T>(
        &self,
        connection: Object,
        outcome: Result<Result<T, Failure>, Elapsed>,
    ) -> Result<T, Failure> {
        let result = outcome.unwrap_or(Err(Failure::TimedOut));
        if let Err(failure) = &result
            && failure.poisons_connection()
        {
            drop(Object::take(connection));
            let idle = self.pool.retain(|_, _| false);
            tracing::debug!(
                idle_closed = idle.removed.len(),
                "closed database connections after a connection failure"
            );
        }
        result
    }

    /// The account that `key` (`$1` of `statement`) finds, with one query: what
    /// `account_by_email` and `account_by_id` share.
    async fn account_by(
        &self,
        op: &'static str,
        statement: &'static str,
        key: Param<'_>,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        let window_start = recent_issues_start(now);
        self.run(op, async |connection| {
            connection
                .query_opt(
                    &prepared(connection, statement).await?,
                    &[key, &window_start],
                )
                .await?
                .as_ref()
                .map(rows::account)
                .transpose()
        })
        .await
    }

    /// Runs `statement` (one of the `PRUNE_*`) in batches until one comes back short; each
    /// batch is an operation of its own, under its own deadline.
    async fn prune_rows(
        &self,
        op: &'static str,
        statement: &'static str,
        before: SystemTime,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        loop {
            let batch = self
                .run(op, async |connection| {
                    let statement = prepared(connection, statement).await?;
                    Ok(connection
                        .execute(&statement, &[&before, &sql::PRUNE_BATCH])
                        .await?)
                })
                .await?;
            deleted += batch;
            if batch < sql::PRUNE_BATCH.unsigned_abs() {
                return Ok(deleted);
            }
        }
    }
}

/// The start of the window whose code issues a load returns with the account (exclusive).
fn recent_issues_start(now: SystemTime) -> SystemTime {
    now.checked_sub(CodePolicy::WINDOW)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The `hits` of a throttle window up to which its events were admitted: `hits` above it means
/// the event just counted was refused. A new window counts its first event even with a limit of
/// 0, as the memory store does.
fn most_hits_admitted(limit: Limit) -> i64 {
    i64::from(limit.max.max(1))
}

/// Where a throttle window that `limit` opens at `now` ends.
fn new_window_end(limit: Limit, now: SystemTime) -> Result<SystemTime, Failure> {
    in_range(now.checked_add(limit.window), "throttle window end")
}

/// `statement`, prepared once per connection (deadpool's statement cache).
async fn prepared(connection: &Object, statement: &str) -> Result<Statement, Failure> {
    Ok(connection.prepare_cached(statement).await?)
}

/// The first column of `row`, a count, as "at least one".
fn counted(row: &Row) -> Result<bool, Failure> {
    Ok(row.try_get::<_, i64>(0)? > 0)
}

/// Runs a save on `connection`. A new account: one statement (it has no mail yet, so none to
/// cancel). An existing one: one statement, unless it writes a live code: then `BEGIN`, two
/// statements sent together (one round trip for both), `COMMIT` (see `sql::SAVE_ACCOUNT`).
async fn save(connection: &mut Object, write: &AccountWrite) -> Result<(), Failure> {
    let Some(version) = write.expected_version else {
        connection
            .execute(
                &prepared(connection, sql::REGISTER).await?,
                &write.register_params(),
            )
            .await?;
        return Ok(());
    };
    if !write.code_and_mail.writes_live_code() {
        // One statement is its own transaction.
        let saved = connection
            .query_one(
                &prepared(connection, sql::SAVE_ACCOUNT).await?,
                &write.save_params(&version),
            )
            .await?;
        return if counted(&saved)? {
            Ok(())
        } else {
            Err(Failure::Conflict)
        };
    }
    let transaction = connection.transaction().await?;
    let (save_user, save_rest) = try_join(
        transaction.prepare_cached(sql::SAVE_ACCOUNT),
        transaction.prepare_cached(sql::SAVE_CODE_AND_MAIL),
    )
    .await?;
    // `join` polls the user's statement first, and a query is written to the connection on its
    // first poll: the server runs them in this order, so the old live code is replaced (and its
    // pending mail cancelled) before the new code and its mail are written. A lost race shows
    // as no user row written.
    let (saved, rest) = join(
        transaction.query_one(&save_user, &write.save_user_params(&version)),
        transaction.execute(&save_rest, &write.code_and_mail.params()),
    )
    .await;
    if !counted(&saved?)? {
        // The second statement may have failed or written: both are undone here.
        transaction.rollback().await?;
        return Err(Failure::Conflict);
    }
    rest?;
    transaction.commit().await?;
    Ok(())
}

impl Store for PgStore {
    #[tracing::instrument(name = "store: account by email", skip_all)]
    async fn account_by_email(
        &self,
        email: &Email,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        self.account_by(
            "load account by email",
            sql::ACCOUNT_BY_EMAIL,
            &email.key(),
            now,
        )
        .await
    }

    #[tracing::instrument(name = "store: account by id", skip_all)]
    async fn account_by_id(
        &self,
        id: UserId,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        self.account_by("load account by id", sql::ACCOUNT_BY_ID, &id.as_uuid(), now)
            .await
    }

    #[tracing::instrument(name = "store: save account", skip_all)]
    async fn save(&self, change: AccountChange) -> Result<(), SaveError> {
        let write = AccountWrite::new(&change);
        self.run_with("save account", write, async |connection, write| {
            save(connection, &write).await
        })
        .await
    }

    #[tracing::instrument(name = "store: claim mail", skip_all)]
    async fn claim_mail(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedMail>, StoreError> {
        let lease_until = in_range(now.checked_add(lease), "lease end");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run_with(
            "claim mail",
            lease_until,
            async |connection, lease_until| {
                let statement = prepared(connection, sql::CLAIM_MAIL).await?;
                let claimed = connection
                    .query(&statement, &[&now, &lease_until, &limit])
                    .await?;
                claimed
                    .iter()
                    .filter_map(|row| rows::claimed_mail(row).transpose())
                    .collect()
            },
        )
        .await
    }

    #[tracing::instrument(name = "store: finish mail", skip_all, fields(messages = settled.len()))]
    async fn finish_mail(
        &self,
        settled: &[(&ClaimedMail, &MailOutcome)],
    ) -> Result<Vec<bool>, StoreError> {
        if settled.is_empty() {
            return Ok(Vec::new());
        }
        let settlements = Settlements::new(settled);
        self.run("finish mail", async |connection| {
            let rows = connection
                .query(
                    &prepared(connection, sql::FINISH_MAIL).await?,
                    &settlements.params(),
                )
                .await?;
            let ids = rows
                .iter()
                .map(|row| row.try_get::<_, Uuid>(0))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(settlements.recorded(&ids))
        })
        .await
    }

    #[tracing::instrument(name = "store: mail being sent", skip_all)]
    async fn mail_being_sent(&self, code: CodeId, now: SystemTime) -> Result<bool, StoreError> {
        self.run("check mail being sent", async |connection| {
            let params: [Param<'_>; 2] = [&code.as_uuid(), &now];
            let row = connection
                .query_one(&prepared(connection, sql::MAIL_BEING_SENT).await?, &params)
                .await?;
            Ok(row.try_get::<_, bool>(0)?)
        })
        .await
    }

    #[tracing::instrument(name = "store: outbox depth", skip_all)]
    async fn outbox_depth(&self) -> Result<u64, StoreError> {
        self.run("count pending mail", async |connection| {
            let count: i64 = connection
                .query_one(&prepared(connection, sql::OUTBOX_DEPTH).await?, &[])
                .await?
                .try_get(0)?;
            Ok(u64::try_from(count).unwrap_or_default())
        })
        .await
    }

    #[tracing::instrument(name = "store: login state", skip_all)]
    async fn login_state(
        &self,
        email: Option<&Email>,
        throttles: &[(ThrottleKey, Limit)],
        now: SystemTime,
    ) -> Result<Lookup, StoreError> {
        let email_key = email.map(Email::key);
        let window_start = recent_issues_start(now);
        let keys: Vec<String> = throttles
            .iter()
            .map(|(key, _)| key.as_storage_key())
            .collect();
        let maxes: Vec<i64> = throttles
            .iter()
            .map(|(_, limit)| i64::from(limit.max))
            .collect();
        self.run("read login state", async |connection| {
            let statement = prepared(connection, sql::LOGIN_STATE).await?;
            let row = connection
                .query_one(
                    &statement,
                    &[&email_key, &window_start, &keys, &maxes, &now],
                )
                .await?;
            rows::lookup(&row)
        })
        .await
    }

    #[tracing::instrument(name = "store: registration state", skip_all)]
    async fn registration_state(
        &self,
        email: &Email,
        throttle: Option<(&ThrottleKey, Limit)>,
        now: SystemTime,
    ) -> Result<Lookup, StoreError> {
        let Some((key, limit)) = throttle else {
            return Ok(Lookup::Open(self.account_by_email(email, now).await?));
        };
        let email_key = email.key();
        let window_start = recent_issues_start(now);
        let key = key.as_storage_key();
        let most = most_hits_admitted(limit);
        let window_end = new_window_end(limit, now);
        self.run_with(
            "read registration state",
            window_end,
            async |connection, new_window_end| {
                let statement = prepared(connection, sql::REGISTRATION_STATE).await?;
                let row = connection
                    .query_one(
                        &statement,
                        &[
                            &email_key,
                            &window_start,
                            &key,
                            &now,
                            &new_window_end,
                            &most,
                        ],
                    )
                    .await?;
                rows::lookup(&row)
            },
        )
        .await
    }

    #[tracing::instrument(name = "store: throttle hit", skip_all)]
    async fn throttle_hit(
        &self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        let key = key.as_storage_key();
        let window_end = new_window_end(limit, now);
        self.run_with(
            "count throttle hit",
            window_end,
            async |connection, new_window_end| {
                let params: [Param<'_>; 3] = [&key, &now, &new_window_end];
                let row = connection
                    .query_one(&prepared(connection, sql::THROTTLE_HIT).await?, &params)
                    .await?;
                let window_end: SystemTime = row.try_get(0)?;
                let hits: i64 = row.try_get(1)?;
                let refused = hits > most_hits_admitted(limit);
                Ok(refused.then_some(window_end))
            },
        )
        .await
    }

    #[tracing::instrument(name = "store: delete account", skip_all)]
    async fn delete_account(&self, id: UserId, expected_version: u64) -> Result<(), SaveError> {
        let version = to_version(expected_version);
        self.run_with("delete account", version, async |connection, version| {
            let params: [Param<'_>; 2] = [&id.as_uuid(), &version];
            match connection
                .execute(&prepared(connection, sql::DELETE_ACCOUNT).await?, &params)
                .await?
            {
                0 => Err(Failure::Conflict),
                _ => Ok(()),
            }
        })
        .await
    }

    #[tracing::instrument(name = "store: prune", skip_all)]
    async fn prune(
        &self,
        now: SystemTime,
        mail_queued_before: SystemTime,
        pending_registered_before: SystemTime,
    ) -> Result<Pruned, StoreError> {
        let mail = self
            .prune_rows("prune mail", sql::PRUNE_MAIL, mail_queued_before)
            .await?;
        let throttles = self
            .prune_rows("prune throttles", sql::PRUNE_THROTTLES, now)
            .await?;
        let pending_accounts = self
            .prune_rows(
                "prune pending accounts",
                sql::PRUNE_PENDING_ACCOUNTS,
                pending_registered_before,
            )
            .await?;
        Ok(Pruned {
            mail,
            throttles,
            pending_accounts,
        })
    }

    #[tracing::instrument(name = "store: ping", skip_all)]
    async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", async |connection| {
            connection.simple_query(sql::PING).await?;
            Ok(())
        })
        .await
    }
}
