//! The run's PostgreSQL: a private throw-away cluster on a free port, started pinned to the
//! driver's CPU so it never competes with the server's, and removed at the end. Where no cluster
//! can be started (no PostgreSQL binaries, no `postgres` user), a fresh database on the local
//! server, unpinned, with a warning.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

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
    Cluster { bin: PathBuf, dir: PathBuf },
    LocalDatabase { name: String },
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
        let Owned::Cluster { dir, .. } = &self.owned else {
            return Ok(());
        };
        let pid_file = fs::read_to_string(dir.join("data/postmaster.pid"))
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
            Owned::Cluster { bin, dir } => {
                let _ = as_postgres(&bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(dir.join("data"))
                    .args(["-m", "immediate", "-w", "stop"])
                    .output();
                let _ = fs::remove_dir_all(&dir);
            }
            Owned::LocalDatabase { name } => {
                let _ = psql(LOCAL_ADMIN_URL, &format!("DROP DATABASE IF EXISTS {name}"));
            }
        }
    }
}

/// `initdb` and `pg_ctl start` as the `postgres` user (we may be root), under `taskset -c cpu`.
fn private_cluster(cpu: Option<usize>) -> Result<Database, String> {
    let bin = postgres_bin().ok_or("no /usr/lib/postgresql/*/bin/initdb")?;
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("registrar-bench-pg-{}", std::process::id()));
    fs::create_dir_all(&dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let owned = Owned::Cluster {
        bin: bin.clone(),
        dir: dir.clone(),
    };
    let cleanup = |reason: String| {
        let _ = fs::remove_dir_all(&dir);
        reason
    };
    run(Command::new("chown").arg("postgres:postgres").arg(&dir)).map_err(cleanup)?;
    let pinned = |program: &Path| match cpu {
        Some(cpu) => {
            let mut command = as_postgres(Path::new("taskset"));
            command.arg("-c").arg(cpu.to_string()).arg(program);
            command
        }
        None => as_postgres(program),
    };
    run(pinned(&bin.join("initdb"))
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]))
    .map_err(cleanup)?;
    run(pinned(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-l")
        .arg(dir.join("postgres.log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.display()
        ))
        .args(["-w", "start"]))
    .map_err(cleanup)?;
    let pinning = cpu.map_or_else(|| "unpinned".to_owned(), |cpu| format!("on CPU {cpu}"));
    Ok(Database {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        description: format!(
            "a private throw-away cluster ({}, port {port}, default settings) {pinning}",
            bin.parent()
                .and_then(Path::file_name)
                .map_or_else(String::new, |version| format!(
                    "PostgreSQL {}",
                    version.to_string_lossy()
                ))
        ),
        owned,
    })
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

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// `program` run as the `postgres` user when this process is root (initdb refuses root).
fn as_postgres(program: &Path) -> Command {
    let root = fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        == Some("0");
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("no free port: {error}"))
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

/// One SQL statement through `psql`.
fn psql(url: &str, sql: &str) -> Result<(), String> {
    run(Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql]))
}

/// Runs `command` to the end; its standard error is the failure.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|error| format!("cannot run {}: {error}", command.get_program().display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            command.get_program().display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
