//! A fresh PostgreSQL database per test: `REGISTRAR_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`. When it cannot be reached the test fails,
//! saying how to start it; it never skips.

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Numbers the databases one test binary creates.
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// A database created for one test and dropped when the test ends, however it ends.
pub(crate) struct TestDatabase {
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// A new, empty database.
    pub(crate) fn create() -> Self {
        let admin_url = std::env::var("REGISTRAR_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "registrar_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
        );
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        Self { admin_url, name }
    }

    /// The database's URL, optionally through another host:port.
    pub(crate) fn url(&self, via: Option<u16>) -> String {
        let (base, _) = self.admin_url.rsplit_once('/').unwrap();
        let base = match via {
            Some(port) => {
                let (scheme_user, _) = base.rsplit_once('@').unwrap();
                format!("{scheme_user}@127.0.0.1:{port}")
            }
            None => base.to_owned(),
        };
        format!("{base}/{}", self.name)
    }

    /// The port the PostgreSQL server listens on.
    pub(crate) fn port(&self) -> u16 {
        self.admin_url
            .rsplit_once('@')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|host_port| host_port.rsplit_once(':'))
            .map_or(5432, |(_, port)| port.parse().unwrap())
    }

    /// The rows `sql` returns, as `psql -At` prints them.
    pub(crate) fn query(&self, sql: &str) -> String {
        psql(&self.url(None), sql)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.admin_url.as_str(),
                "-Atqc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
        .output()
        .unwrap_or_else(|e| panic!("psql is needed for the PostgreSQL tests: {e}"));
    assert!(
        output.status.success(),
        "PostgreSQL is needed for these tests and `{sql}` failed at {url}: {}\n\
         Start it (e.g. `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) \
         or set REGISTRAR_TEST_DATABASE_URL.",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
