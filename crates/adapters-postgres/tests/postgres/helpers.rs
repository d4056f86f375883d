//! Test databases: each test gets a fresh, migrated database of its own from the test toolkit
//! (`registrar_testing::postgres`: `REGISTRAR_TEST_DATABASE_URL`, else `127.0.0.1:5432`, else
//! a private cluster), dropped again when the test ends, passed or failed; and what the tests
//! need around it: URLs through a proxy or with TLS parameters, a maintenance connection, a
//! store that drops its database with it.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    str::FromStr,
};

use registrar_adapters_postgres::{PgSettings, PgStore};
use registrar_application::{
    ports::{AccountChange, QueuedMail, Store},
    testing::{PassingStore, t0},
};
use registrar_domain::{
    Account, CodeDigits, CodeId, CodeSecret, Email, NewCode, PasswordHash, UserId,
};
pub(crate) use registrar_testing::postgres::with_host;
use registrar_testing::postgres::{self as toolkit, server_url};
use tokio_postgres::{NoTls, config::Host};

/// `url` with its host and port replaced by `127.0.0.1:port` (to go through a proxy).
pub(crate) fn with_port(url: &str, port: u16) -> String {
    with_host(url, "127.0.0.1", port)
}

/// `url` with `params` (`key=value&…`) added to its query; for the TLS parameters, a later
/// value wins over one the URL already has.
pub(crate) fn with_params(url: &str, params: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}")
}

/// The PostgreSQL server's TCP address, from the test URL.
pub(crate) fn server_address() -> SocketAddr {
    let config = tokio_postgres::Config::from_str(server_url()).unwrap();
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

/// A connection to the server's maintenance database.
pub(crate) async fn maintenance() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(server_url(), NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {}: {e}", server_url()));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database that exists until this guard is dropped.
#[derive(Debug)]
pub(crate) struct TestDatabase {
    database: toolkit::TestDatabase,
}

impl TestDatabase {
    /// Creates an empty database (not migrated).
    pub(crate) async fn empty() -> Self {
        // Creating blocks on a thread of its own; the runtime's other workers go on meanwhile.
        let database = tokio::task::spawn_blocking(toolkit::TestDatabase::create)
            .await
            .unwrap();
        Self { database }
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
        self.database.name()
    }

    /// Its URL.
    pub(crate) fn url(&self) -> &str {
        self.database.url()
    }

    /// Store settings for it, with the defaults.
    pub(crate) fn settings(&self) -> PgSettings {
        PgSettings::new(self.url().to_owned())
    }

    /// A plain connection to it, for arranging and inspecting what the store cannot.
    pub(crate) async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(self.url(), NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

/// A store on a fresh database, which is dropped with it.
pub(crate) type TestStore = PassingStore<PgStore, TestDatabase>;

/// A store on a fresh, migrated database.
pub(crate) async fn fresh_store() -> TestStore {
    let database = TestDatabase::migrated().await;
    PassingStore::keeping(PgStore::new(&database.settings()).unwrap(), database)
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
        trace: None,
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
