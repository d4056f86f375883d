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
    AccountChange, ClaimedMail, Limit, MailOutcome, Pruned, SaveError, Store, StoreError,
    ThrottleKey, Versioned,
};
use registrar_domain::{ActivationCode, CodePolicy, Email, UserId, UserStatus};
use tokio::{
    runtime::Handle,
    time::{Instant, error::Elapsed, timeout_at},
};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::{
    PgSettings, SetupError,
    connect::OnRuntime,
    error::Failure,
    rows::{self, state_text, to_int},
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
    /// The sessions' configuration, for the connections outside the pool.
    config: tokio_postgres::Config,
    /// Their TLS connector, the pool's.
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

    /// The sessions' configuration, for connections outside the pool.
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.inner.config
    }

    /// The TLS connector, for connections outside the pool.
    pub(crate) fn tls(&self) -> &Tls {
        &self.inner.tls
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

    /// A connection from the pool, by `deadline`.
    async fn connection(&self, deadline: Instant) -> Result<Object, Failure> {
        match timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(Failure::Pool(error)),
            Err(_) => Err(Failure::TimedOut),
        }
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

    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.settings.statement_timeout
    }

    /// Loads the account that `key` (`$1` of `statement`) finds, with one query.
    async fn load(
        &self,
        statement: &'static str,
        key: &(dyn ToSql + Sync),
        now: SystemTime,
    ) -> Result<Option<Versioned>, Failure> {
        let window_start = now
            .checked_sub(CodePolicy::WINDOW)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let deadline = self.deadline();
        let connection = self.connection(deadline).await?;
        let outcome = timeout_at(deadline, async {
            let statement = connection.prepare_cached(statement).await?;
            let row = connection
                .query_opt(&statement, &[key, &window_start])
                .await?;
            row.as_ref().map(rows::account).transpose()
        })
        .await;
        self.settle(connection, outcome)
    }

    async fn save_change(&self, change: &AccountChange) -> Result<(), Failure> {
        let write = AccountWrite::new(change)?;
        let deadline = self.deadline();
        let mut connection = self.connection(deadline).await?;
        let outcome = timeout_at(deadline, write.run(&mut connection)).await;
        self.settle(connection, outcome)
    }

    async fn claim(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedMail>, Failure> {
        let lease_until = now
            .checked_add(lease)
            .ok_or_else(|| Failure::Invalid("lease end out of range".into()))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let deadline = self.deadline();
        let connection = self.connection(deadline).await?;
        let outcome = timeout_at(deadline, async {
            let statement = connection.prepare_cached(sql::CLAIM_MAIL).await?;
            let claimed = connection
                .query(&statement, &[&now, &lease_until, &limit])
                .await?;
            claimed
                .iter()
                .filter_map(|row| rows::claimed_mail(row).transpose())
                .collect()
        })
        .await;
        self.settle(connection, outcome)
    }

    async fn finish(&self, mail: &ClaimedMail, outcome: &MailOutcome) -> Result<bool, Failure> {
        let deadline = self.deadline();
        let connection = self.connection(deadline).await?;
        let result = timeout_at(deadline, async {
            let (id, claim) = (&mail.id, &mail.claim);
            let settled = match outcome {
                MailOutcome::Sent { accepted_at } => {
                    let statement = connection.prepare_cached(sql::FINISH_SENT).await?;
                    let row = connection
                        .query_one(&statement, &[id, claim, accepted_at])
                        .await?;
                    row.try_get::<_, i64>(0)? > 0
                }
                MailOutcome::Failed { error } => {
                    let statement = connection.prepare_cached(sql::FINISH_FAILED).await?;
                    let row = connection
                        .query_one(&statement, &[id, claim, error])
                        .await?;
                    row.try_get::<_, i64>(0)? > 0
                }
                MailOutcome::Retry {
                    next_attempt_at,
                    error,
                } => {
                    let statement = connection.prepare_cached(sql::FINISH_RETRY).await?;
                    connection
                        .execute(&statement, &[id, claim, next_attempt_at, error])
                        .await?
                        > 0
                }
                MailOutcome::Cancelled => {
                    let statement = connection.prepare_cached(sql::FINISH_CANCELLED).await?;
                    connection.execute(&statement, &[id, claim]).await? > 0
                }
            };
            Ok(settled)
        })
        .await;
        self.settle(connection, result)
    }

    async fn depth(&self) -> Result<u64, Failure> {
        let deadline = self.deadline();
        let connection = self.connection(deadline).await?;
        let outcome = timeout_at(deadline, async {
            let statement = connection.prepare_cached(sql::OUTBOX_DEPTH).await?;
            let count: i64 = connection.query_one(&statement, &[]).await?.try_get(0)?;
            Ok(u64::try_from(count).unwrap_or_default())
        })
        .await;
        self.settle(connection, outcome)
    }

    async fn erase(&self, id: UserId, expected_version: u64) -> Result<(), Failure> {
        let version = i64::try_from(expected_version)
            .map_err(|_| Failure::Invalid("version out of range".into()))?;
        let deadline = self.deadline();
        let connection = self.connection(deadline).await?;
        let outcome = timeout_at(deadline, async {
            let statement = connection.prepare_cached(sql::DELETE_ACCOUNT).await?;
            match connection
                .execute(&statement, &[&id.as_uuid(), &version])
                .await?
            {
                0 => Err(Failure::Conflict),
                _ => Ok(()),
            }
        })
        .await;
        self.settle(connection, outcome)
    }

    /// Runs `statement` (one of the `PRUNE_*`) in batches until one comes back short.
    async fn prune_rows(
        &self,
        statement: &'static str,
        before: SystemTime,
    ) -> Result<u64, Failure> {
        let mut deleted = 0;
        loop {
            let deadline = self.deadline();
            let connection = self.connection(deadline).await?;
            let outcome = timeout_at(deadline, async {
                let statement = connection.prepare_cached(statement).await?;
                Ok(connection
                    .execute(&statement, &[&before, &sql::PRUNE_BATCH])
                    .await?)
            })
            .await;
            let batch = self.settle(connection, outcome)?;
            deleted += batch;
            if batch < sql::PRUNE_BATCH.unsigned_abs() {
                return Ok(deleted);
            }
        }
    }

    async fn closed_until(
        &self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, Failure> {
        let key = key.as_storage_key();
        let max = i64::from(limit.max);
        let deadline = self.deadline();
        let connection = self.connection(deadline).await?;
        let outcome = timeout_at(deadline, async {
            let statement = connection.prepare_cached(sql::THROTTLED_UNTIL).await?;
            let row = connection
                .query_opt(&statement, &[&key, &now, &max])
                .await?;
            Ok(row.map(|row| row.try_get(0)).transpose()?)
        })
        .await;
        self.settle(connection, outcome)
    }

    async fn hit(
        &self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, Failure> {
        let key = key.as_storage_key();
        let new_window_end = now
            .checked_add(limit.window)
            .ok_or_else(|| Failure::Invalid("throttle window end out of range".into()))?;
        let deadline = self.deadline();
        let connection = self.connection(deadline).await?;
        let outcome = timeout_at(deadline, async {
            let statement = connection.prepare_cached(sql::THROTTLE_HIT).await?;
            let row = connection
                .query_one(&statement, &[&key, &now, &new_window_end])
                .await?;
            let window_end: SystemTime = row.try_get(0)?;
            let hits: i64 = row.try_get(1)?;
            // A new window counts its first event even with a limit of 0 (as the memory store
            // does); after that, `hits` above the limit means this event was refused.
            let refused = hits > i64::from(limit.max.max(1));
            Ok(refused.then_some(window_end))
        })
        .await;
        self.settle(connection, outcome)
    }

    async fn answer(&self) -> Result<(), Failure> {
        let deadline = self.deadline();
        let connection = self.connection(deadline).await?;
        let outcome = timeout_at(deadline, async {
            connection.simple_query(sql::PING).await?;
            Ok(())
        })
        .await;
        self.settle(connection, outcome)
    }
}

/// The parameters of one save, owned so the statements can borrow them.
struct AccountWrite {
    user_id: Uuid,
    email: String,
    email_key: String,
    password_hash: String,
    created_at: SystemTime,
    activated_at: Option<SystemTime>,
    expected_version: Option<i64>,
    code_id: Option<Uuid>,
    digest: Option<[u8; 32]>,
    issued_at: Option<SystemTime>,
    delivered_at: Option<SystemTime>,
    wrong_attempts: Option<i32>,
    state: Option<&'static str>,
    mail_id: Option<Uuid>,
    mail_code_id: Option<Uuid>,
    recipient: Option<String>,
    mail_code: Option<String>,
    queued_at: Option<SystemTime>,
}

impl AccountWrite {
    fn new(change: &AccountChange) -> Result<Self, Failure> {
        let user = change.account.user();
        let code = change.account.code();
        let mail = change.mail.as_ref();
        let expected_version = change
            .expected_version
            .map(|version| {
                i64::try_from(version).map_err(|_| Failure::Invalid("version out of range".into()))
            })
            .transpose()?;
        let activated_at = match user.status() {
            UserStatus::Pending => None,
            UserStatus::Active { activated_at } => Some(activated_at),
        };
        Ok(Self {
            user_id: user.id().as_uuid(),
            email: user.email().as_str().to_owned(),
            email_key: user.email().key(),
            password_hash: user.password_hash().as_str().to_owned(),
            created_at: user.created_at(),
            activated_at,
            expected_version,
            code_id: code.map(|c| c.id().as_uuid()),
            digest: code.map(|c| *c.digest().as_bytes()),
            issued_at: code.map(ActivationCode::issued_at),
            delivered_at: code.and_then(ActivationCode::delivered_at),
            wrong_attempts: code
                .map(|c| to_int(c.wrong_attempts(), "wrong attempts"))
                .transpose()?,
            state: code.map(|c| state_text(c.state())),
            mail_id: mail.map(|m| m.id),
            mail_code_id: mail.map(|m| m.code_id.as_uuid()),
            recipient: mail.map(|m| m.to.as_str().to_owned()),
            mail_code: mail.map(|m| m.code.reveal()),
            queued_at: mail.map(|m| m.queued_at),
        })
    }

    /// Runs the save on `connection`. A new account: one statement (it has no mail yet, so
    /// none to cancel). An existing one: `BEGIN`, two statements sent together (one round trip
    /// for both), `COMMIT`; or a single statement when there is neither a code nor mail to
    /// write. The first of the two (or the single one) also cancels the account's pending
    /// mail whose code is not live after the save.
    async fn run(&self, connection: &mut Object) -> Result<(), Failure> {
        let digest = self.digest.as_ref().map(<[u8; 32]>::as_slice);
        let code_and_mail: [&(dyn ToSql + Sync); 12] = [
            &self.code_id,
            &self.user_id,
            &digest,
            &self.issued_at,
            &self.delivered_at,
            &self.wrong_attempts,
            &self.state,
            &self.mail_id,
            &self.mail_code_id,
            &self.recipient,
            &self.mail_code,
            &self.queued_at,
        ];
        let Some(version) = self.expected_version else {
            let statement = connection.prepare_cached(sql::REGISTER).await?;
            let mut params = code_and_mail.to_vec();
            params.extend::<[&(dyn ToSql + Sync); 5]>([
                &self.email,
                &self.email_key,
                &self.password_hash,
                &self.created_at,
                &self.activated_at,
            ]);
            connection.execute(&statement, &params).await?;
            return Ok(());
        };
        let user: [&(dyn ToSql + Sync); 9] = [
            &self.user_id,
            &self.email,
            &self.email_key,
            &self.password_hash,
            &self.created_at,
            &self.activated_at,
            &version,
            &self.code_id,
            &self.state,
        ];
        if self.code_id.is_none() && self.mail_id.is_none() {
            // One statement is its own transaction.
            let statement = connection.prepare_cached(sql::SAVE_USER).await?;
            let saved: i64 = connection.query_one(&statement, &user).await?.try_get(0)?;
            return if saved == 0 {
                Err(Failure::Conflict)
            } else {
                Ok(())
            };
        }
        let transaction = connection.transaction().await?;
        let (save_user, save_rest) = try_join(
            transaction.prepare_cached(sql::SAVE_USER),
            transaction.prepare_cached(sql::SAVE_CODE_AND_MAIL),
        )
        .await?;
        // `join` polls the user's statement first, and a query is written to the connection
        // on its first poll: the server runs them in this order, so the old live code is
        // replaced (and its pending mail cancelled) before the new code and its mail are
        // written. A lost race shows as no user row written.
        let (saved, rest) = join(
            transaction.query_one(&save_user, &user),
            transaction.execute(&save_rest, &code_and_mail),
        )
        .await;
        let saved: i64 = saved?.try_get(0)?;
        if saved == 0 {
            // The second statement may have failed or written: both are undone here.
            transaction.rollback().await?;
            return Err(Failure::Conflict);
        }
        rest?;
        transaction.commit().await?;
        Ok(())
    }
}

impl Store for PgStore {
    #[tracing::instrument(name = "store: account by email", skip_all)]
    async fn account_by_email(
        &self,
        email: &Email,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        let key = email.key();
        self.load(sql::ACCOUNT_BY_EMAIL, &key, now)
            .await
            .map_err(|f| f.into_store_error("load account by email"))
    }

    #[tracing::instrument(name = "store: account by id", skip_all)]
    async fn account_by_id(
        &self,
        id: UserId,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        let id = id.as_uuid();
        self.load(sql::ACCOUNT_BY_ID, &id, now)
            .await
            .map_err(|f| f.into_store_error("load account by id"))
    }

    #[tracing::instrument(name = "store: save account", skip_all)]
    async fn save(&self, change: AccountChange) -> Result<(), SaveError> {
        self.save_change(&change)
            .await
            .map_err(|f| f.into_save_error("save account"))
    }

    #[tracing::instrument(name = "store: claim mail", skip_all)]
    async fn claim_mail(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedMail>, StoreError> {
        self.claim(now, lease, limit)
            .await
            .map_err(|f| f.into_store_error("claim mail"))
    }

    #[tracing::instrument(name = "store: finish mail", skip_all)]
    async fn finish_mail(
        &self,
        mail: &ClaimedMail,
        outcome: MailOutcome,
    ) -> Result<bool, StoreError> {
        self.finish(mail, &outcome)
            .await
            .map_err(|f| f.into_store_error("finish mail"))
    }

    #[tracing::instrument(name = "store: outbox depth", skip_all)]
    async fn outbox_depth(&self) -> Result<u64, StoreError> {
        self.depth()
            .await
            .map_err(|f| f.into_store_error("count pending mail"))
    }

    #[tracing::instrument(name = "store: throttled until", skip_all)]
    async fn throttled_until(
        &self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        self.closed_until(key, limit, now)
            .await
            .map_err(|f| f.into_store_error("read throttle"))
    }

    #[tracing::instrument(name = "store: throttle hit", skip_all)]
    async fn throttle_hit(
        &self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        self.hit(key, limit, now)
            .await
            .map_err(|f| f.into_store_error("count throttle hit"))
    }

    #[tracing::instrument(name = "store: delete account", skip_all)]
    async fn delete_account(&self, id: UserId, expected_version: u64) -> Result<(), SaveError> {
        self.erase(id, expected_version)
            .await
            .map_err(|f| f.into_save_error("delete account"))
    }

    #[tracing::instrument(name = "store: prune", skip_all)]
    async fn prune(
        &self,
        now: SystemTime,
        mail_queued_before: SystemTime,
        pending_registered_before: SystemTime,
    ) -> Result<Pruned, StoreError> {
        let mail = self
            .prune_rows(sql::PRUNE_MAIL, mail_queued_before)
            .await
            .map_err(|f| f.into_store_error("prune mail"))?;
        let throttles = self
            .prune_rows(sql::PRUNE_THROTTLES, now)
            .await
            .map_err(|f| f.into_store_error("prune throttles"))?;
        let pending_accounts = self
            .prune_rows(sql::PRUNE_PENDING_ACCOUNTS, pending_registered_before)
            .await
            .map_err(|f| f.into_store_error("prune pending accounts"))?;
        Ok(Pruned {
            mail,
            throttles,
            pending_accounts,
        })
    }

    #[tracing::instrument(name = "store: ping", skip_all)]
    async fn ping(&self) -> Result<(), StoreError> {
        self.answer().await.map_err(|f| f.into_store_error("ping"))
    }
}
