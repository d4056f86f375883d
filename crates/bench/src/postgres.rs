//! A run's PostgreSQL: a private throw-away cluster from the test toolkit (never a server that
//! happens to listen on the default port), its processes pinned to a CPU when asked so they
//! never compete with the server's; the toolkit removes it when it is dropped, or when this
//! process ends however it ends. Where no cluster can be started (no PostgreSQL binaries, no
//! `postgres` user), a fresh database on the local server, unpinned, with a warning.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    process::Command,
};

use registrar_testing::postgres::{Discovery, NotFound, Server};

use crate::machine;

/// The local server used when no private cluster can be started.
const LOCAL_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The database the server is given, and how to get rid of it.
pub struct Database {
    /// `DATABASE_URL` for the server.
    pub url: String,
    /// What it is, for the report.
    pub description: String,
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
    pub fn start(cpu: Option<usize>, warning: &mut Option<String>) -> Result<Self, String> {
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
    pub fn repin(&self, cpus: &str) -> Result<(), String> {
        let Some(postmaster) = self.postmaster()? else {
            return Ok(());
        };
        machine::pin(postmaster, cpus)?;
        for child in children(postmaster) {
            // A background process may have exited since the listing; the rest still moves.
            let _ = machine::pin(child, cpus);
        }
        Ok(())
    }

    /// The private cluster's data folder, or `None` on the local server.
    fn data_folder(&self) -> Option<PathBuf> {
        let Owned::Cluster(server) = &self.owned else {
            return None;
        };
        Some(server.cluster()?.folder().join("data"))
    }

    /// The private cluster's postmaster, or `None` on the local server.
    fn postmaster(&self) -> Result<Option<u32>, String> {
        let Some(data) = self.data_folder() else {
            return Ok(None);
        };
        let pid_file = fs::read_to_string(data.join("postmaster.pid"))
            .map_err(|error| format!("cannot read postmaster.pid: {error}"))?;
        pid_file
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| "postmaster.pid names no process".to_owned())
    }

    /// Loads `libraries` at start-up (`shared_preload_libraries`, which only a restart applies)
    /// and restarts the private cluster; an error on the local server, which is not ours to
    /// restart.
    pub fn preload(&self, libraries: &str) -> Result<(), String> {
        let data = self
            .data_folder()
            .ok_or("only a private cluster can be restarted with other libraries")?;
        psql(
            &self.url,
            &format!("ALTER SYSTEM SET shared_preload_libraries = '{libraries}'"),
        )?;
        let pg_ctl = Discovery::from_environment()
            .binary_dirs
            .into_iter()
            .map(|dir| dir.join("pg_ctl"))
            .find(|path| path.is_file())
            .ok_or("no pg_ctl on PATH or under /usr/lib/postgresql/*/bin")?;
        let folder = data.parent().unwrap_or(&data).to_path_buf();
        // PostgreSQL refuses to run as root; the toolkit started the cluster as `postgres`.
        let as_root = fs::metadata("/proc/self").is_ok_and(|proc| proc.uid() == 0);
        let mut command = if as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            command
        } else {
            Command::new(&pg_ctl)
        };
        let output = command
            .current_dir(&folder)
            .arg("restart")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(folder.join("postgres-restarted.log"))
            .args(["-w", "-t", "60", "-m", "fast"])
            .output()
            .map_err(|error| format!("cannot run pg_ctl: {error}"))?;
        output.status.success().then_some(()).ok_or_else(|| {
            format!(
                "pg_ctl restart failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
    }

    /// CPU time PostgreSQL has used so far, seconds: the postmaster and its live processes, and
    /// the processes it has reaped (their time is added to its own on exit); `None` on the local
    /// server.
    #[must_use]
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.cpu_meter().map(CpuMeter::seconds)
    }

    /// What reads [`Database::cpu_seconds`] without borrowing the database; `None` on the local
    /// server.
    #[must_use]
    pub fn cpu_meter(&self) -> Option<CpuMeter> {
        Some(CpuMeter {
            postmaster: self.postmaster().ok()??,
        })
    }

    /// Stops and deletes the cluster, or drops the database.
    pub fn remove(self) {
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
    query(url, sql).map(drop)
}

/// Reads the CPU time a private cluster has used so far (see [`Database::cpu_seconds`]).
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    postmaster: u32,
}

impl CpuMeter {
    /// Seconds of CPU the postmaster, its live processes and those it has reaped have used.
    #[must_use]
    pub fn seconds(self) -> f64 {
        let ticks: u64 = std::iter::once(self.postmaster)
            .chain(children(self.postmaster))
            .filter_map(machine::cpu_ticks)
            .sum();
        machine::ticks_to_seconds(ticks)
    }
}

/// The rows `sql` returns through `psql`, one line each, fields separated by tabs, without
/// headers; its standard error is the failure.
pub fn query(url: &str, sql: &str) -> Result<String, String> {
    let output = Command::new("psql")
        .args([
            url,
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-qAt",
            "-F",
            "\t",
            "-c",
            sql,
        ])
        .output()
        .map_err(|error| format!("cannot run psql: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
