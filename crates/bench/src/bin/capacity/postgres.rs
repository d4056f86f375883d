//! The run's PostgreSQL: a private throw-away cluster from the test toolkit (never a server that
//! happens to listen on the default port), its processes then pinned to the driver's CPU so they
//! never compete with the server's; the toolkit removes it when it is dropped, or when this
//! process ends however it ends. Where no cluster can be started (no PostgreSQL binaries, no
//! `postgres` user), a fresh database on the local server, unpinned, with a warning.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    process::Command,
};

use registrar_testing::postgres::{Discovery, NotFound, Server};

use crate::machine;

/// The local server used when no private cluster can be started.
const LOCAL_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The database the server is given, and how to get rid of it.
pub(crate) struct Database {
    /// `DATABASE_URL` for the server.
    pub(crate) url: String,
    /// What it is, for the report.
    pub(crate) description: String,
    /// A private cluster to stop and delete, or a database on the local server to drop.
    owned: Owned,
}

enum Owned {
    /// The toolkit's find, holding the private cluster: dropping it stops and deletes it.
    Cluster(Server),
    LocalDatabase {
        name: String,
    },
}

impl Database {
    /// A private cluster pinned to `cpu` (or unpinned when `None`); or, failing that, a fresh
    /// database on the local server, with the reason in `warning`.
    pub(crate) fn start(cpu: Option<usize>, warning: &mut Option<String>) -> Result<Self, String> {
        match private_cluster(cpu) {
            Ok(database) => Ok(database),
            Err(reason) => {
                *warning = Some(format!(
                    "no private PostgreSQL cluster ({reason}): the local server at 127.0.0.1:5432 \
                     was used, unpinned, sharing the CPUs with everything"
                ));
                local_database()
            }
        }
    }

    /// Lets PostgreSQL run on `cpus` from now on (connections opened later inherit it).
    pub(crate) fn repin(&self, cpus: &str) -> Result<(), String> {
        let Owned::Cluster(server) = &self.owned else {
            return Ok(());
        };
        let Some(cluster) = server.cluster() else {
            return Ok(());
        };
        let pid_file = fs::read_to_string(cluster.folder().join("data/postmaster.pid"))
            .map_err(|error| format!("cannot read postmaster.pid: {error}"))?;
        let postmaster: u32 = pid_file
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .ok_or("postmaster.pid names no process")?;
        machine::pin(postmaster, cpus)?;
        for child in children(postmaster) {
            // A background process may have exited since the listing; the rest still moves.
            let _ = machine::pin(child, cpus);
        }
        Ok(())
    }

    /// Stops and deletes the cluster, or drops the database.
    pub(crate) fn remove(self) {
        match self.owned {
            Owned::Cluster(server) => drop(server),
            Owned::LocalDatabase { name } => {
                let _ = psql(LOCAL_ADMIN_URL, &format!("DROP DATABASE IF EXISTS {name}"));
            }
        }
    }
}

/// The toolkit's private cluster, with nothing configured and a default address where nothing
/// listens, so that it never settles for the local server; then pinned to `cpu`.
fn private_cluster(cpu: Option<usize>) -> Result<Database, String> {
    let server = Discovery {
        configured: None,
        default_address: closed_address()?,
        ..Discovery::from_environment()
    }
    .run()
    .map_err(|error| match error {
        NotFound::NotInstalled => {
            "no initdb and pg_ctl on PATH or under /usr/lib/postgresql/*/bin".to_owned()
        }
        NotFound::ClusterFailed(why) => why,
    })?;
    let cluster = server
        .cluster()
        .ok_or("the toolkit found a server instead of starting a cluster")?;
    let port = cluster.address().port();
    // PG_VERSION holds the major version, as /usr/lib/postgresql/<version> names it.
    let version = fs::read_to_string(cluster.folder().join("data/PG_VERSION"))
        .map(|version| format!("PostgreSQL {}, ", version.trim()))
        .unwrap_or_default();
    // The toolkit trades durability for test speed; a benchmark measures what production pays.
    // ALTER SYSTEM overrides postgresql.conf, and a reload applies all three.
    for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
        psql(server.url(), &format!("ALTER SYSTEM SET {setting} = on"))?;
    }
    psql(server.url(), "SELECT pg_reload_conf()")?;
    let pinning = cpu.map_or_else(|| "unpinned".to_owned(), |cpu| format!("on CPU {cpu}"));
    let database = Database {
        url: server.url().to_owned(),
        description: format!(
            "a private throw-away cluster ({version}port {port}, PostgreSQL's default \
             durability) {pinning}"
        ),
        owned: Owned::Cluster(server),
    };
    if let Some(cpu) = cpu {
        // On failure the cluster goes with `database`.
        database.repin(&cpu.to_string())?;
    }
    Ok(database)
}

/// A loopback address nothing listens on (bound, read, released).
fn closed_address() -> Result<SocketAddr, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map_err(|error| format!("no free port: {error}"))
}

/// A fresh database on the local server.
fn local_database() -> Result<Database, String> {
    let name = format!("registrar_bench_{}", std::process::id());
    psql(LOCAL_ADMIN_URL, &format!("CREATE DATABASE {name}"))?;
    Ok(Database {
        url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
        description: format!("database {name} on the local server at 127.0.0.1:5432, unpinned"),
        owned: Owned::LocalDatabase { name },
    })
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // The parent is the second field after the parenthesised command name.
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// One SQL statement through `psql`; its standard error is the failure.
fn psql(url: &str, sql: &str) -> Result<(), String> {
    let output = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .map_err(|error| format!("cannot run psql: {error}"))?;
    output.status.success().then_some(()).ok_or_else(|| {
        format!(
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}
