//! Test databases: each test gets a fresh, migrated database of its own on the server named by
//! `REGISTRAR_TEST_DATABASE_URL`, dropped again when the test ends, passed or failed.
//!
//! Names are `registrar_test_<unix seconds>_<uuid>`. A database is dropped by its guard; one
//! left behind by a killed run is dropped by a later run once it is an hour old, so test runs
//! sharing a server never drop each other's live databases.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    str::FromStr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime},
};

use registrar_adapters_postgres::{PgSettings, PgStore};
use registrar_application::{
    ports::{
        AccountChange, ClaimedMail, Limit, MailOutcome, Pruned, QueuedMail, SaveError, Store,
        StoreError, ThrottleKey, Versioned,
    },
    testing::t0,
};
use registrar_domain::{
    Account, CodeDigits, CodeId, CodeSecret, Email, NewCode, PasswordHash, UserId,
};
use tokio_postgres::{NoTls, config::Host};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PREFIX: &str = "registrar_test_";
/// Leftovers older than this are from runs that were killed.
const LEFTOVER_AGE: Duration = Duration::from_hours(1);

/// The maintenance URL of the test server.
pub(crate) fn server_url() -> String {
    std::env::var("REGISTRAR_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// `url` with its database name replaced by `database`.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url
        .split_once("://")
        .expect("REGISTRAR_TEST_DATABASE_URL must be a postgres:// URL");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |at| &tail[at..]);
    format!("{scheme}://{authority}/{database}{query}")
}

/// `url` with its host and port replaced by `127.0.0.1:port` (to go through a proxy).
pub(crate) fn with_port(url: &str, port: u16) -> String {
    with_host(url, "127.0.0.1", port)
}

/// `url` with its host and port replaced by `host:port`.
pub(crate) fn with_host(url: &str, host: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let userinfo = authority
        .rsplit_once('@')
        .map_or(String::new(), |(user, _)| format!("{user}@"));
    format!("{scheme}://{userinfo}{host}:{port}{tail}")
}

/// `url` with `params` (`key=value&…`) added to its query; for the TLS parameters, a later
/// value wins over one the URL already has.
pub(crate) fn with_params(url: &str, params: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}")
}

/// The PostgreSQL server's TCP address, from the test URL.
pub(crate) fn server_address() -> SocketAddr {
    let config = tokio_postgres::Config::from_str(&server_url()).unwrap();
    let Some(Host::Tcp(host)) = config.get_hosts().first() else {
        panic!("these tests need a TCP host in REGISTRAR_TEST_DATABASE_URL");
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host.as_str(), port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
}

/// A connection to the server's maintenance database; fails the test with instructions when
/// the server is not there.
pub(crate) async fn maintenance() -> tokio_postgres::Client {
    let url = server_url();
    let connect = async {
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok::<_, tokio_postgres::Error>(client)
    };
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => {
            let cause = std::error::Error::source(&error).map(ToString::to_string);
            let error =
                cause.map_or_else(|| error.to_string(), |cause| format!("{error}: {cause}"));
            panic!("{}", unreachable_message(&url, &error))
        }
        Err(elapsed) => panic!("{}", unreachable_message(&url, &elapsed.to_string())),
    }
}

fn unreachable_message(url: &str, error: &str) -> String {
    // Never show a password from the URL.
    let url = match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        },
        None => "the configured server".to_owned(),
    };
    format!(
        "PostgreSQL is not reachable at {url} ({error}).\n\
         These tests need a real server. Start the local one with\n    \
         pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
         or point REGISTRAR_TEST_DATABASE_URL at a server where this user may CREATE DATABASE."
    )
}

/// A database that exists until this guard is dropped.
#[derive(Debug)]
pub(crate) struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates an empty database (not migrated).
    pub(crate) async fn empty() -> Self {
        let admin = maintenance().await;
        drop_leftovers(&admin).await;
        let created = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!("{PREFIX}{created}_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let url = with_database(&server_url(), &name);
        Self { name, url }
    }

    /// Creates a database and applies the migrations.
    pub(crate) async fn migrated() -> Self {
        let database = Self::empty().await;
        PgStore::new(&database.settings())
            .unwrap()
            .migrate()
            .await
            .unwrap();
        database
    }

    /// The database's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Its URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Store settings for it, with the defaults.
    pub(crate) fn settings(&self) -> PgSettings {
        PgSettings::new(self.url.clone())
    }

    /// A plain connection to it, for arranging and inspecting what the store cannot.
    pub(crate) async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside the test's runtime (which must not block on another future) or
        // while it shuts down: do the work on a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let admin = maintenance().await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
            })
        })
        .join();
        // A failure to clean up fails the test, unless it is failing already.
        assert!(
            matches!(dropped, Ok(Ok(()))) || std::thread::panicking(),
            "could not drop test database {}: {dropped:?}",
            self.name
        );
    }
}

/// Drops test databases that killed runs left behind (once per test process).
async fn drop_leftovers(admin: &tokio_postgres::Client) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let rows = admin
        .query(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
            &[&PREFIX],
        )
        .await
        .unwrap();
    for row in rows {
        let name: String = row.get(0);
        let created = name[PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|created| now.saturating_sub(created) > LEFTOVER_AGE.as_secs()) {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

/// A store on a fresh database, which is dropped with it.
#[derive(Debug)]
pub(crate) struct TestStore {
    // Declared first, so the pool closes its connections before the database is dropped.
    pub(crate) store: PgStore,
    pub(crate) database: TestDatabase,
}

/// A store on a fresh, migrated database.
pub(crate) async fn fresh_store() -> TestStore {
    let database = TestDatabase::migrated().await;
    TestStore {
        store: PgStore::new(&database.settings()).unwrap(),
        database,
    }
}

impl Store for TestStore {
    async fn account_by_email(
        &self,
        email: &Email,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        self.store.account_by_email(email, now).await
    }

    async fn account_by_id(
        &self,
        id: UserId,
        now: SystemTime,
    ) -> Result<Option<Versioned>, StoreError> {
        self.store.account_by_id(id, now).await
    }

    async fn save(&self, change: AccountChange) -> Result<(), SaveError> {
        self.store.save(change).await
    }

    async fn claim_mail(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedMail>, StoreError> {
        self.store.claim_mail(now, lease, limit).await
    }

    async fn finish_mail(
        &self,
        mail: &ClaimedMail,
        outcome: MailOutcome,
    ) -> Result<bool, StoreError> {
        self.store.finish_mail(mail, outcome).await
    }

    async fn outbox_depth(&self) -> Result<u64, StoreError> {
        self.store.outbox_depth().await
    }

    async fn throttled_until(
        &self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        self.store.throttled_until(key, limit, now).await
    }

    async fn throttle_hit(
        &self,
        key: &ThrottleKey,
        limit: Limit,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        self.store.throttle_hit(key, limit, now).await
    }

    async fn delete_account(&self, id: UserId, expected_version: u64) -> Result<(), SaveError> {
        self.store.delete_account(id, expected_version).await
    }

    async fn prune(
        &self,
        now: SystemTime,
        mail_queued_before: SystemTime,
        pending_registered_before: SystemTime,
    ) -> Result<Pruned, StoreError> {
        self.store
            .prune(now, mail_queued_before, pending_registered_before)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

/// Registers `email` at `t0` with code `0421` and its mail queued: user `n`, code `n + 1`,
/// mail `n + 2`.
pub(crate) async fn register(store: &impl Store, n: u128, email: &str) -> Account {
    let secret = CodeSecret::new(*b"postgres adapter tests, 32 bytes").unwrap();
    let digits = CodeDigits::parse("0421").unwrap();
    let code_id = CodeId::from_uuid(uuid::Uuid::from_u128(n + 1));
    let account = Account::register(
        UserId::from_uuid(uuid::Uuid::from_u128(n)),
        Email::parse(email).unwrap(),
        PasswordHash::from_phc("$test$pw".to_owned()).unwrap(),
        NewCode::new(code_id, digits, &secret),
        t0(),
    );
    let mail = QueuedMail {
        id: uuid::Uuid::from_u128(n + 2),
        to: account.user().email().clone(),
        code: digits,
        code_id,
        queued_at: t0(),
    };
    store
        .save(AccountChange {
            account: account.clone(),
            expected_version: None,
            mail: Some(mail),
        })
        .await
        .unwrap();
    account
}
