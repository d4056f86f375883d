//! A fresh database per test on the test server, dropped when the test ends, passed or failed.
//!
//! Names are `registrar_test_<unix seconds>_<pid>_<n>`. A database is dropped by its guard; one
//! left behind by a killed run is dropped by a later run once it is an hour old, so test runs
//! sharing a server never drop each other's live databases.
//!
//! Everything here blocks, on a thread with a runtime of its own, so that it works the same from
//! a plain test, an async test (whose runtime must not block on another future) and a drop.

use std::{
    future::Future,
    str::FromStr,
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage, config::Host};

const PREFIX: &str = "registrar_test_";
/// Leftovers older than this are from runs that were killed.
const LEFTOVER_AGE: Duration = Duration::from_hours(1);
/// How long a connection to the server may take.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// A database that exists until this guard is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// A new, empty database on the test server ([`super::server`]).
    #[must_use]
    pub fn create() -> Self {
        Self::create_on(super::server_url(), PREFIX)
    }

    /// A new, empty database on the server of `admin_url` (a user that may create databases),
    /// named `<prefix><unix seconds>_<pid>_<n>`.
    #[must_use]
    pub fn create_on(admin_url: &str, prefix: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!(
            "{prefix}{created}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin = admin_url.to_owned();
        let sql = format!("CREATE DATABASE \"{name}\"");
        block_on(async move {
            let client = connect(&admin).await;
            drop_leftovers(&client).await;
            client.batch_execute(&sql).await
        })
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {}", chain(&e)));
        Self {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        }
    }

    /// The database's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its URL through `127.0.0.1:port` instead of the server's address (for a proxy).
    #[must_use]
    pub fn url_via(&self, port: u16) -> String {
        with_host(&self.url, "127.0.0.1", port)
    }

    /// The server's host and port.
    #[must_use]
    pub fn host_port(&self) -> (String, u16) {
        let config = tokio_postgres::Config::from_str(&self.url).unwrap();
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            _ => panic!("these tests need a TCP host in the server URL {}", self.url),
        };
        (host, config.get_ports().first().copied().unwrap_or(5432))
    }

    /// The server's port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.host_port().1
    }

    /// The rows `sql` returns as `psql -At` prints them: one line per row, columns joined by
    /// `|`, in PostgreSQL's text form (`t`/`f` for booleans).
    #[must_use]
    pub fn query(&self, sql: &str) -> String {
        let (url, text) = (self.url.clone(), sql.to_owned());
        let messages = block_on(async move { connect(&url).await.simple_query(&text).await })
            .unwrap_or_else(|e| panic!("`{sql}` failed: {}", chain(&e)));
        messages
            .iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl TestDatabase {
    /// Runs `sql` (statements that return no rows, for arranging what the code under test
    /// cannot).
    pub fn execute(&self, sql: &str) {
        let (url, text) = (self.url.clone(), sql.to_owned());
        block_on(async move { connect(&url).await.batch_execute(&text).await })
            .unwrap_or_else(|e| panic!("`{sql}` failed: {}", chain(&e)));
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::panic::catch_unwind(move || {
            block_on(async move {
                connect(&admin)
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
            })
        });
        // A failure to clean up fails the test, unless it is failing already.
        assert!(
            matches!(dropped, Ok(Ok(()))) || std::thread::panicking(),
            "could not drop test database {}: {dropped:?}",
            self.name
        );
    }
}

/// `url` with its database name replaced by `database` (its query string kept).
#[must_use]
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("{url:?} is not a postgres:// URL"));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |at| &tail[at..]);
    format!("{scheme}://{authority}/{database}{query}")
}

/// `url` with its host and port replaced by `host:port` (user, database and query kept).
#[must_use]
pub fn with_host(url: &str, host: &str, port: u16) -> String {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("{url:?} is not a postgres:// URL"));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let userinfo = authority
        .rsplit_once('@')
        .map_or(String::new(), |(user, _)| format!("{user}@"));
    format!("{scheme}://{userinfo}{host}:{port}{tail}")
}

/// Runs `future` to completion on a new thread with a runtime of its own; a panic in it is
/// passed on.
pub(super) fn block_on<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A connection to `url`; fails the test saying where and why when there is none.
async fn connect(url: &str) -> Client {
    let connecting = tokio_postgres::connect(url, NoTls);
    let error = match tokio::time::timeout(CONNECT_PATIENCE, connecting).await {
        Ok(Ok((client, connection))) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            return client;
        }
        Ok(Err(error)) => chain(&error),
        Err(elapsed) => elapsed.to_string(),
    };
    panic!(
        "PostgreSQL is not reachable at {} ({error}); set {} to a server where this user may \
         CREATE DATABASE",
        without_password(url),
        super::URL_VARIABLE
    )
}

/// `url` without the password it may hold.
fn without_password(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        },
        None => "the configured server".to_owned(),
    }
}

/// The error and its causes, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// Drops test databases that killed runs left behind (once per test process).
async fn drop_leftovers(admin: &Client) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let Ok(rows) = admin
        .query(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
            &[&PREFIX],
        )
        .await
    else {
        return;
    };
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
