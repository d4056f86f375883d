//! TLS to PostgreSQL, against the real server: libpq's `sslmode` and `sslrootcert` in the URL
//! decide whether the store's sessions (pooled and migration) are
//! encrypted and which certificates they accept.
//!
//! The server must have `ssl = on`. Debian's `postgresql` package sets that up by default, with
//! the self-signed "snakeoil" certificate of the `ssl-cert` package; the tests read the server's
//! `ssl_cert_file` and trust it as its own root for the `verify-*` modes. Without TLS on the
//! server they fail and say how to turn it on. Whether a session is encrypted is read from
//! `pg_stat_ssl`, for the sessions the store opened (application name `registrar`).

use std::{path::PathBuf, time::Duration};

use registrar_adapters_postgres::{PgSettings, PgStore, SetupError};
use registrar_application::{
    ErrorChain,
    ports::{Store, StoreError},
    testing::t0,
};
use registrar_domain::Email;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, copy_bidirectional},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use crate::helpers::{
    TestDatabase, maintenance, register, server_address, with_host, with_params, with_port,
};

/// Generous for a loaded CI machine: a refused certificate fails in milliseconds.
const BOUND: Duration = Duration::from_secs(10);

/// A CA certificate that signed nothing of the server's (its key was thrown away).
const UNRELATED_CA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/postgres/unrelated-ca.pem"
);

/// The server's TLS set-up, as the tests need it.
struct ServerTls {
    /// The server's certificate file, self-signed: its own root.
    cert_file: PathBuf,
    /// The DNS names the certificate is valid for.
    names: Vec<String>,
}

/// Reads the server's TLS set-up; fails the test with instructions when TLS is off.
async fn server_tls() -> ServerTls {
    let admin = maintenance().await;
    let setting = |name: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap_or_else(|e| panic!("cannot read the server's {name}: {e}"))
                .get::<_, String>(0)
        }
    };
    let ssl = setting("ssl").await;
    assert!(
        ssl == "on",
        "the PostgreSQL server has ssl = {ssl}; the TLS tests need it on. Debian's postgresql \
         package turns it on with the snakeoil certificate of the ssl-cert package; elsewhere:\n    \
         make-ssl-cert generate-default-snakeoil   # or any self-signed certificate and key\n    \
         psql -h 127.0.0.1 -U postgres -c \"ALTER SYSTEM SET ssl_cert_file = \
         '/etc/ssl/certs/ssl-cert-snakeoil.pem'\" \\\n        \
         -c \"ALTER SYSTEM SET ssl_key_file = '/etc/ssl/private/ssl-cert-snakeoil.key'\" \
         -c \"ALTER SYSTEM SET ssl = on\" -c \"SELECT pg_reload_conf()\"\n\
         (the server's user must be able to read the key: on Debian it is in group ssl-cert)"
    );
    let mut cert_file = PathBuf::from(setting("ssl_cert_file").await);
    if cert_file.is_relative() {
        cert_file = PathBuf::from(setting("data_directory").await).join(cert_file);
    }
    let pem = std::fs::read(&cert_file).unwrap_or_else(|e| {
        panic!(
            "cannot read the server's certificate {} ({e}); the TLS tests trust it as the \
             server's root, so they must run on the server's machine",
            cert_file.display()
        )
    });
    let cert = CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap_or_else(|| panic!("{} holds no PEM certificate", cert_file.display()))
        .unwrap();
    let names = webpki::EndEntityCert::try_from(&cert)
        .unwrap_or_else(|e| panic!("{} does not parse: {e:?}", cert_file.display()))
        .valid_dns_names()
        .map(str::to_owned)
        .collect();
    ServerTls { cert_file, names }
}

/// Store settings for `database` with `params` added to the URL.
fn settings_with(database: &TestDatabase, params: &str) -> PgSettings {
    PgSettings::new(with_params(database.url(), params))
}

/// Makes a round trip through a store with `settings`, then tells whether each of its sessions
/// on `database` is encrypted.
async fn sessions_after_a_round_trip(database: &TestDatabase, settings: &PgSettings) -> Vec<bool> {
    let store = PgStore::new(settings).unwrap();
    round_trip(&store).await;
    store_sessions_encrypted(database).await
}

/// Whether each of the store's sessions on `database` is encrypted (`pg_stat_ssl.ssl`).
async fn store_sessions_encrypted(database: &TestDatabase) -> Vec<bool> {
    maintenance()
        .await
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = $1 AND a.application_name = 'registrar'",
            &[&database.name()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Registers an account through `store` and reads it back.
async fn round_trip(store: &PgStore) {
    register(store, 10, "ada@example.com").await;
    let email = Email::parse("ada@example.com").unwrap();
    let found = store.account_by_email(&email, t0()).await.unwrap();
    assert!(found.is_some(), "the account saved over TLS was not found");
}

/// The message of the store error of an operation that must fail to connect, within
/// [`BOUND`]. TLS refusals are internal errors: waiting does not mend them.
async fn tls_refusal(store: &PgStore) -> String {
    let outcome = tokio::time::timeout(BOUND, store.ping())
        .await
        .expect("connecting hung instead of failing");
    match outcome {
        Err(error @ StoreError::Internal(_)) => ErrorChain(&error).to_string(),
        other => panic!("expected TLS to refuse the connection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_the_stores_sessions_and_a_round_trip_works() {
    server_tls().await;
    let database = TestDatabase::migrated().await;
    let sessions =
        sessions_after_a_round_trip(&database, &settings_with(&database, "sslmode=require")).await;

    assert!(
        !sessions.is_empty() && sessions.iter().all(|&ssl| ssl),
        "sessions (ssl per session): {sessions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sslmode_the_store_prefers_tls_as_libpq_does() {
    server_tls().await;
    let database = TestDatabase::migrated().await;
    let sessions = sessions_after_a_round_trip(&database, &database.settings()).await;

    assert!(
        !sessions.is_empty() && sessions.iter().all(|&ssl| ssl),
        "sessions (ssl per session): {sessions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_keeps_the_stores_sessions_unencrypted() {
    server_tls().await;
    let database = TestDatabase::migrated().await;
    let sessions =
        sessions_after_a_round_trip(&database, &settings_with(&database, "sslmode=disable")).await;

    assert!(
        !sessions.is_empty() && sessions.iter().all(|&ssl| !ssl),
        "sessions (ssl per session): {sessions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_server_whose_certificate_another_ca_did_not_sign() {
    server_tls().await;
    let database = TestDatabase::migrated().await;
    let settings = settings_with(
        &database,
        &format!("sslmode=verify-full&sslrootcert={UNRELATED_CA}"),
    );
    let store = PgStore::new(&settings).unwrap();

    let message = tls_refusal(&store).await;

    assert!(
        message.contains("the database's TLS certificate was refused")
            && message.contains("UnknownIssuer"),
        "{message}"
    );
    assert!(store_sessions_encrypted(&database).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_and_require_with_a_root_file_refuse_a_certificate_it_does_not_vouch_for() {
    server_tls().await;
    let database = TestDatabase::migrated().await;
    // `require` checks the chain when a root file is given, as libpq does.
    for mode in ["verify-ca", "require", "prefer"] {
        let settings = settings_with(
            &database,
            &format!("sslmode={mode}&sslrootcert={UNRELATED_CA}"),
        );
        let store = PgStore::new(&settings).unwrap();

        let message = tls_refusal(&store).await;

        assert!(message.contains("UnknownIssuer"), "{mode}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_trusts_the_servers_self_signed_certificate_as_its_root_whatever_its_name() {
    let server = server_tls().await;
    let database = TestDatabase::migrated().await;
    // The URL's host is an IP address the certificate does not name: verify-ca does not care.
    let settings = settings_with(
        &database,
        &format!(
            "sslmode=verify-ca&sslrootcert={}",
            server.cert_file.display()
        ),
    );
    let store = PgStore::new(&settings).unwrap();

    round_trip(&store).await;

    let sessions = store_sessions_encrypted(&database).await;
    assert!(!sessions.is_empty() && sessions.iter().all(|&ssl| ssl));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_needs_the_host_name_of_the_certificate() {
    let server = server_tls().await;
    let Some(name) = server.names.first() else {
        panic!(
            "the server's certificate {} names no DNS host (no subjectAltName); verify-full \
             cannot accept it for any host. Regenerate it with a name, e.g. \
             make-ssl-cert generate-default-snakeoil --force-overwrite",
            server.cert_file.display()
        );
    };
    let database = TestDatabase::migrated().await;
    let root = format!("sslrootcert={}", server.cert_file.display());
    let address = server_address();

    // By IP address, which the certificate does not name: refused.
    let by_address = PgStore::new(&settings_with(
        &database,
        &format!("sslmode=verify-full&{root}"),
    ))
    .unwrap();
    let message = tls_refusal(&by_address).await;
    assert!(message.contains("not valid for name"), "{message}");

    // By the certificate's name (reached at the server's address): trusted.
    let url = with_host(database.url(), name, address.port());
    let by_name = PgStore::new(&PgSettings::new(with_params(
        &url,
        &format!("sslmode=verify-full&{root}&hostaddr={}", address.ip()),
    )))
    .unwrap();
    round_trip(&by_name).await;
    let sessions = store_sessions_encrypted(&database).await;
    assert!(!sessions.is_empty() && sessions.iter().all(|&ssl| ssl));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_modes_and_unreadable_roots_stop_the_store_at_start_up_without_the_password() {
    let url = "postgres://app:s3cret-pw@127.0.0.1:5432/registrar";
    for (params, names) in [
        ("sslmode=bogus", "sslmode `bogus`"),
        (
            "sslmode=verify-full&sslrootcert=/nonexistent",
            "/nonexistent",
        ),
        ("sslmode=verify-ca&sslrootcert=", "sslrootcert"),
    ] {
        let result = PgStore::new(&PgSettings::new(with_params(url, params)));

        let Err(error @ SetupError::Settings(_)) = result else {
            panic!("{params}: expected a settings error, got {result:?}");
        };
        let message = ErrorChain(&error).to_string();
        assert!(message.contains(names), "{params}: {message}");
        assert!(!message.contains("s3cret-pw"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_over_tls_and_check_the_certificate_as_the_pool_does() {
    server_tls().await;
    let database = TestDatabase::empty().await;
    let refused = PgStore::new(&settings_with(
        &database,
        &format!("sslmode=verify-full&sslrootcert={UNRELATED_CA}"),
    ))
    .unwrap();
    let error = refused.migrate().await.unwrap_err();
    assert!(
        matches!(error, SetupError::Connect(_))
            && ErrorChain(&error).to_string().contains("UnknownIssuer"),
        "{}",
        ErrorChain(&error).to_string()
    );

    let store = PgStore::new(&settings_with(&database, "sslmode=require")).unwrap();
    store.migrate().await.unwrap();

    round_trip(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_falls_back_to_plain_text_when_the_server_declines_tls_and_require_refuses() {
    let database = TestDatabase::migrated().await;
    let declining = DecliningProxy::start().await;
    let url = with_port(database.url(), declining.port);

    let preferring = PgStore::new(&PgSettings::new(with_params(&url, "sslmode=prefer"))).unwrap();
    round_trip(&preferring).await;
    let sessions = store_sessions_encrypted(&database).await;
    assert!(
        !sessions.is_empty() && sessions.iter().all(|&ssl| !ssl),
        "{sessions:?}"
    );

    let requiring = PgStore::new(&PgSettings::new(with_params(&url, "sslmode=require"))).unwrap();
    let message = tls_refusal(&requiring).await;
    assert!(message.contains("server does not support TLS"), "{message}");
}

/// A proxy that answers PostgreSQL's TLS request with "no", as a server without TLS does, and
/// forwards everything else to the server. Stops when dropped.
struct DecliningProxy {
    port: u16,
    task: JoinHandle<()>,
}

impl DecliningProxy {
    /// The first 8 bytes a client sends to ask for TLS: length 8, code 80877103.
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = server_address();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut first = [0; 8];
                    if inbound.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let relayed = if first == Self::SSL_REQUEST {
                        inbound.write_all(b"N").await
                    } else {
                        outbound.write_all(&first).await
                    };
                    if relayed.is_ok() {
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { port, task }
    }
}

impl Drop for DecliningProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
