//! Which PostgreSQL server the tests use, found once per test process, in this order:
//! 1. `REGISTRAR_TEST_DATABASE_URL`, when set;
//! 2. `127.0.0.1:5432`, when a server there lets `postgres` in without a password;
//! 3. a private, throw-away cluster started from the PostgreSQL binaries installed on the
//!    machine (`initdb` and `pg_ctl` on `PATH` or under `/usr/lib/postgresql/*/bin`), removed
//!    when the process ends, however it ends.
//!
//! Only when none of these is possible do the tests fail, with one line saying what to install
//! and which variable to set. Each test then gets a fresh database of its own
//! ([`TestDatabase`]).

mod cluster;
mod database;
mod probe;

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::LazyLock,
};

pub use cluster::Cluster;
pub use database::{TestDatabase, with_database, with_host};

/// The variable naming the server the tests must use (a `postgres://` URL of a user that may
/// create databases).
pub const URL_VARIABLE: &str = "REGISTRAR_TEST_DATABASE_URL";

/// Where a local development server is expected: `127.0.0.1:5432`.
pub const DEFAULT_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5432);

/// Where to look for a server, and for the binaries to start one.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The URL the environment names ([`URL_VARIABLE`]); used as it is when set.
    pub configured: Option<String>,
    /// The address probed for a server that lets `postgres` in without a password.
    pub default_address: SocketAddr,
    /// The directories searched, in order, for `initdb` and `pg_ctl`.
    pub binary_dirs: Vec<PathBuf>,
}

impl Discovery {
    /// What this machine offers: the environment variable, [`DEFAULT_ADDRESS`], and the
    /// directories of `PATH` followed by `/usr/lib/postgresql/*/bin` (newest version first).
    #[must_use]
    pub fn from_environment() -> Self {
        let configured = std::env::var(URL_VARIABLE)
            .ok()
            .filter(|url| !url.trim().is_empty());
        let mut binary_dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect())
            .unwrap_or_default();
        binary_dirs.extend(installed_versions(Path::new("/usr/lib/postgresql")));
        Self {
            configured,
            default_address: DEFAULT_ADDRESS,
            binary_dirs,
        }
    }

    /// Finds the server, starting a private cluster when it must.
    pub fn run(self) -> Result<Server, NotFound> {
        if let Some(url) = self.configured {
            return Ok(Server {
                url,
                source: Source::Configured,
                cluster: None,
            });
        }
        if probe::lets_postgres_in(self.default_address) {
            return Ok(Server {
                url: admin_url(self.default_address),
                source: Source::Default,
                cluster: None,
            });
        }
        let Some(binaries) = cluster::Binaries::find(&self.binary_dirs) else {
            return Err(NotFound::NotInstalled);
        };
        let cluster = Cluster::start(&binaries).map_err(NotFound::ClusterFailed)?;
        Ok(Server {
            url: admin_url(cluster.address()),
            source: Source::Private,
            cluster: Some(cluster),
        })
    }
}

/// `/usr/lib/postgresql/<version>/bin` for every installed version, the newest first.
fn installed_versions(root: &Path) -> Vec<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|version| std::cmp::Reverse(version.0));
    versions.into_iter().map(|(_, bin)| bin).collect()
}

/// The maintenance URL of the `postgres` user without a password at `address`.
fn admin_url(address: SocketAddr) -> String {
    format!("postgres://postgres@{address}/postgres")
}

/// How the server was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Named by [`URL_VARIABLE`].
    Configured,
    /// Found at the default address.
    Default,
    /// A private cluster this process started.
    Private,
}

/// The server the tests use.
#[derive(Debug)]
pub struct Server {
    url: String,
    source: Source,
    cluster: Option<Cluster>,
}

impl Server {
    /// Its maintenance URL: a user that may create databases, on the `postgres` database.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How it was found.
    #[must_use]
    pub fn source(&self) -> Source {
        self.source
    }

    /// The private cluster, when this process started one.
    #[must_use]
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }
}

/// Why no server could be had.
#[derive(Debug)]
pub enum NotFound {
    /// Nothing at the default address, and no PostgreSQL binaries to start a cluster with.
    NotInstalled,
    /// The binaries are there, but the private cluster did not start.
    ClusterFailed(String),
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInstalled => write!(
                f,
                "no PostgreSQL found: install PostgreSQL (apt-get install postgresql) or set \
                 {URL_VARIABLE}"
            ),
            Self::ClusterFailed(why) => write!(
                f,
                "could not start a private PostgreSQL cluster for the tests ({why}); set \
                 {URL_VARIABLE} to a server instead"
            ),
        }
    }
}

impl std::error::Error for NotFound {}

/// The server of this test process, found on first use (see the module header). Fails the
/// test with the reason when there is none.
#[must_use]
pub fn server() -> &'static Server {
    static SERVER: LazyLock<Result<Server, String>> = LazyLock::new(|| {
        Discovery::from_environment()
            .run()
            .map_err(|e| e.to_string())
    });
    match &*SERVER {
        Ok(server) => server,
        Err(message) => panic!("{message}"),
    }
}

/// The maintenance URL of [`server`].
#[must_use]
pub fn server_url() -> &'static str {
    server().url()
}
