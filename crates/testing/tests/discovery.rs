//! The PostgreSQL finder, each way it can go: the configured URL, the server at the default
//! address, a private throw-away cluster (and that it is gone afterwards, also when the test
//! process dies without cleaning up), and the one-line failure when PostgreSQL is not
//! installed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use registrar_testing::postgres::{Discovery, NotFound, Source, TestDatabase};

/// Generous for a loaded CI machine.
const PATIENCE: Duration = Duration::from_mins(1);

/// A loopback address nothing listens on (bound, read, released).
fn closed_address() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Discovery as this machine offers it, but with nothing configured and nothing at the default
/// address: only a private cluster can answer.
fn private_only() -> Discovery {
    Discovery {
        configured: None,
        default_address: closed_address(),
        ..Discovery::from_environment()
    }
}

/// The folder, and whether anything listens at the address.
fn listening(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
}

/// Waits (bounded) until `folder` is gone; says whether it went.
fn gone(folder: &Path) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while folder.exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A database made and used on the server at `url`.
fn a_database_works_on(url: &str) {
    let database = TestDatabase::create_on(url, "registrar_test_");
    assert_eq!(database.query("SELECT 1 + 1, 'a'"), "2|a");
}

#[test]
fn a_configured_url_is_used_as_it_is_without_probing() {
    let url = "postgres://someone:secret@db.invalid:6543/elsewhere?sslmode=require";
    let server = Discovery {
        configured: Some(url.to_owned()),
        default_address: closed_address(),
        binary_dirs: Vec::new(),
    }
    .run()
    .unwrap();

    assert_eq!(server.source(), Source::Configured);
    assert_eq!(server.url(), url);
    assert!(server.cluster().is_none());
}

#[test]
fn a_private_cluster_is_started_when_nothing_answers_and_removed_when_dropped() {
    let server = private_only().run().unwrap();
    assert_eq!(server.source(), Source::Private);
    let cluster = server.cluster().unwrap();
    let (address, folder) = (cluster.address(), cluster.folder().to_owned());
    assert_eq!(
        server.url(),
        format!("postgres://postgres@{address}/postgres")
    );
    a_database_works_on(server.url());

    drop(server);

    assert!(!folder.exists(), "{} is still there", folder.display());
    assert!(!listening(address), "something still listens on {address}");
}

#[test]
fn a_server_at_the_default_address_that_lets_postgres_in_is_used() {
    // The private cluster stands in for a developer's server at 127.0.0.1:5432.
    let stand_in = private_only().run().unwrap();
    let address = stand_in.cluster().unwrap().address();

    let server = Discovery {
        configured: None,
        default_address: address,
        binary_dirs: Vec::new(),
    }
    .run()
    .unwrap();

    assert_eq!(server.source(), Source::Default);
    assert_eq!(
        server.url(),
        format!("postgres://postgres@{address}/postgres")
    );
    assert!(server.cluster().is_none());
    a_database_works_on(server.url());
}

#[test]
fn something_at_the_default_address_that_is_not_postgresql_is_passed_over() {
    let impostor = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let address = impostor.local_addr().unwrap();
    // Accepts, then closes without a word.
    let answering = std::thread::spawn(move || drop(impostor.accept()));

    let found = Discovery {
        configured: None,
        default_address: address,
        binary_dirs: Vec::new(),
    }
    .run();

    answering.join().unwrap();
    assert!(matches!(found, Err(NotFound::NotInstalled)), "{found:?}");
}

#[test]
fn without_postgresql_installed_the_failure_is_one_line_saying_what_to_do() {
    let empty = std::env::temp_dir();
    let found = Discovery {
        configured: None,
        default_address: closed_address(),
        binary_dirs: vec![empty, PathBuf::from("/nonexistent/postgresql/bin")],
    }
    .run();

    let message = found.unwrap_err().to_string();
    assert_eq!(
        message,
        "no PostgreSQL found: install PostgreSQL (apt-get install postgresql) or set \
         REGISTRAR_TEST_DATABASE_URL"
    );
}

#[test]
fn a_cluster_is_removed_when_its_process_dies_without_cleaning_up() {
    let output = Command::new(env!("CARGO_BIN_EXE_abandon-cluster"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (folder, address) = stdout
        .lines()
        .find_map(|line| line.strip_prefix("cluster "))
        .and_then(|rest| rest.split_once(' '))
        .unwrap_or_else(|| panic!("the child said no cluster:\n{stdout}"));
    let folder = PathBuf::from(folder);
    // The child exited with the cluster still referenced: nobody dropped it.
    assert!(!output.status.success(), "the child was meant to fail");

    assert!(gone(&folder), "{} outlived its process", folder.display());
    assert!(
        !listening(address.parse().unwrap()),
        "{address} still listens"
    );
}
