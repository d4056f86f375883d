//! A private PostgreSQL cluster for one test process: `initdb` into a fresh temporary folder,
//! trust authentication, a free port on 127.0.0.1, TLS with a throw-away self-signed
//! certificate (when `openssl` is there), durability off (nothing in it outlives the run).
//!
//! Removing it must not depend on this process ending well: Rust's test harness never runs
//! destructors of statics, and a test binary can panic, be interrupted or be killed. So a small
//! watchdog process (`sh`) is started first; it waits for end-of-file on a pipe whose only
//! writer is this process, which the kernel closes however the process ends, then stops the
//! cluster and deletes the folder. It ignores SIGINT, SIGTERM and SIGHUP, so a Ctrl-C that
//! stops the tests does not stop it before it has cleaned up. Dropping a [`Cluster`] closes the
//! pipe and waits for the watchdog, so the cleanup is the same in both cases.
//!
//! As root, every PostgreSQL program runs as the `postgres` user (PostgreSQL refuses to run as
//! root), and the folder is handed to that user.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// Ports tried before giving up (another process may take the free port first).
const START_ATTEMPTS: usize = 5;

/// The watchdog's script: `$1` is the data folder, `$2` the folder to delete, and the rest the
/// `pg_ctl` command (with `runuser` in front when needed).
const WATCHDOG: &str = r#"trap '' INT TERM HUP
cat >/dev/null
data="$1"; folder="$2"; shift 2
"$@" stop -D "$data" -m immediate -w >/dev/null 2>&1
rm -rf "$folder""#;

/// `initdb` and `pg_ctl` from one installation.
#[derive(Debug, Clone)]
pub(super) struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl Binaries {
    /// The first of `dirs` that holds both programs.
    pub(super) fn find(dirs: &[PathBuf]) -> Option<Self> {
        dirs.iter().find_map(|dir| {
            let (initdb, pg_ctl) = (dir.join("initdb"), dir.join("pg_ctl"));
            (initdb.is_file() && pg_ctl.is_file()).then_some(Self { initdb, pg_ctl })
        })
    }
}

/// A running private cluster; stopped and deleted when dropped or when the process ends.
#[derive(Debug)]
pub struct Cluster {
    address: SocketAddr,
    folder: PathBuf,
    watchdog: Child,
    pipe: Option<ChildStdin>,
}

impl Cluster {
    /// Starts a cluster with `binaries` in a new temporary folder.
    pub(super) fn start(binaries: &Binaries) -> Result<Self, String> {
        let as_root = std::fs::metadata("/proc/self").is_ok_and(|proc| proc.uid() == 0);
        let folder = fresh_folder()?;
        let data = folder.join("data");
        let run_as = |program: &Path| -> Command {
            let mut command = if as_root {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(program);
                command
            } else {
                Command::new(program)
            };
            // The postgres user may not be able to read the current folder (root's home).
            command.current_dir(&folder);
            command
        };

        let mut pg_ctl = run_as(&binaries.pg_ctl);
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&data)
            .arg(&folder)
            .arg(pg_ctl.get_program())
            .args(pg_ctl.get_args())
            .current_dir(&folder)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&folder);
                format!("cannot start the clean-up watchdog (sh): {e}")
            })?;
        let mut cluster = Self {
            address: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
            folder: folder.clone(),
            pipe: watchdog.stdin.take(),
            watchdog,
        };

        if as_root {
            run(Command::new("chown").arg("postgres:").arg(&folder))?;
        }
        run(run_as(&binaries.initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync"]))?;
        let tls = make_certificate(&data, run_as(Path::new("openssl")));

        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            write_settings(&data, &folder, port, tls)?;
            let log = folder.join(format!("postgres-{port}.log"));
            let started = run(pg_ctl
                .arg("start")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60"]));
            match started {
                Ok(()) => {
                    cluster.address = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
                    return Ok(cluster);
                }
                Err(error) => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    failures.push(format!("{error} {}", log.trim()));
                    pg_ctl = run_as(&binaries.pg_ctl);
                }
            }
        }
        Err(failures.join("; "))
    }

    /// Where it listens (TCP, trust authentication for every user).
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The temporary folder holding its data, socket and log; gone once it is stopped.
    #[must_use]
    pub fn folder(&self) -> &Path {
        &self.folder
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // End-of-file for the watchdog, which stops the cluster and deletes the folder.
        drop(self.pipe.take());
        let _ = self.watchdog.wait();
    }
}

/// A new, empty folder under the system's temporary folder, readable by all (the `postgres`
/// user must reach its data folder).
fn fresh_folder() -> Result<PathBuf, String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let folder = std::env::temp_dir().join(format!(
        "registrar-test-postgres-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&folder).map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    Ok(folder)
}

/// A port on 127.0.0.1 that nothing listened on a moment ago.
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// What the certificate says: the name `localhost`, and not a CA (TLS libraries refuse a CA
/// certificate as a server's own), as the `ssl-cert` package's snakeoil certificate does.
const CERTIFICATE_REQUEST: &str = "[req]
distinguished_name = name
x509_extensions = server
prompt = no
[name]
CN = localhost
[server]
basicConstraints = CA:FALSE
subjectAltName = DNS:localhost
";

/// A self-signed certificate for `localhost` as the server's `server.crt`/`server.key`; false
/// when `openssl` is not there (the cluster then runs without TLS).
fn make_certificate(data: &Path, mut openssl: Command) -> bool {
    if std::fs::write(data.join("server.cnf"), CERTIFICATE_REQUEST).is_err() {
        return false;
    }
    openssl
        .current_dir(data)
        .args([
            "req",
            "-x509",
            "-config",
            "server.cnf",
            "-newkey",
            "rsa:2048",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
        ]);
    // PostgreSQL refuses a key others may read.
    run(&mut openssl).is_ok()
        && std::fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .is_ok()
}

/// Appends the run's settings to `postgresql.conf`; a later line wins, so a retry on another
/// port only appends again.
fn write_settings(data: &Path, folder: &Path, port: u16, tls: bool) -> Result<(), String> {
    use std::io::Write as _;

    let settings = format!(
        "\n# Registrar's tests\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{}'\n\
         max_connections = 200\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         ssl = {}\n",
        folder.display(),
        if tls { "on" } else { "off" }
    );
    let path = data.join("postgresql.conf");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(settings.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Runs `command` to completion; its output is the error when it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", command.get_program().display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}): {}{}",
            command.get_program().display(),
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
