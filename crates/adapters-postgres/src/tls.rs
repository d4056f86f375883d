//! TLS to PostgreSQL, set up from libpq's `sslmode` and `sslrootcert` in the database URL
//! (the crate documentation has the table of modes, for operators).
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and refuses `sslrootcert` as an
//! unknown option. [`split`] takes both parameters out of the URL; the rest goes to
//! tokio-postgres with the mode it understands (the `verify-*` modes are its `require`: TLS or
//! no connection), and the certificate check lives in the rustls connector that
//! [`TlsParams::connector`] builds: rustls' own `WebPkiServerVerifier` for `verify-full`,
//! [`AnyName`] with the roots for `verify-ca` (and `prefer`/`require` with a root file,
//! libpq's "if a root CA file exists" rule), [`AnyName`] without roots for `prefer`/`require`
//! otherwise.
//! `tokio-postgres-rustls` supplies the stream and SCRAM channel binding.
//!
//! Where this differs from libpq: without `sslrootcert`, the `verify-*` modes trust the
//! operating system's store (`rustls-native-certs`), not `~/.postgresql/root.crt`; no file in
//! the home directory is read; `prefer` falls back to plain only when the server declines TLS,
//! not after a failed handshake; client certificates (`sslcert`, `sslkey`) and CRLs are not
//! supported and refused at start-up.

use std::{borrow::Cow, fmt, path::Path, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{WebPkiSupportedAlgorithms, ring},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
    server::ParsedCertificate,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::SetupError;

/// The connector every connection of the store uses (pooled, migration and listener alike).
pub(crate) type Tls = MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server accepts it, plain otherwise.
    Prefer,
    /// TLS or no connection.
    Require,
    /// TLS with a certificate that chains to a trusted root, whatever name it carries.
    VerifyCa,
    /// TLS with a trusted certificate for the host name connected to.
    VerifyFull,
}

impl SslMode {
    const NAMES: &str = "disable, prefer, require, verify-ca or verify-full";

    fn parse(value: &str) -> Result<Self, SetupError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            // The value is echoed: it is never part of the password.
            other => Err(SetupError::Settings(format!(
                "the database URL's sslmode `{other}` is not one of {}",
                Self::NAMES
            ))),
        }
    }

    /// What tokio-postgres does on the wire; the certificate check is the connector's.
    pub(crate) fn wire(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Wire;
        match self {
            Self::Disable => Wire::Disable,
            Self::Prefer => Wire::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Wire::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        })
    }
}

/// The TLS parameters of a database URL, checked against each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsParams {
    /// The mode, after libpq's defaults.
    pub(crate) mode: SslMode,
    roots: Roots,
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// No `sslrootcert`: nothing is checked below `verify-ca`; the OS store from there on.
    Unset,
    /// `sslrootcert=system`: the operating system's store.
    System,
    /// `sslrootcert=<path>`: the PEM certificates in that file.
    File(String),
}

/// The libpq parameters this module handles itself; tokio-postgres would refuse the second.
const SSLMODE: &str = "sslmode";
const SSLROOTCERT: &str = "sslrootcert";

/// libpq's parameters for client certificates and revocation lists, which are not supported:
/// refused by name, rather than as tokio-postgres' "unknown option".
const UNSUPPORTED: [&str; 5] = ["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"];

/// Splits `url` (a `postgres://` URL or a key=value string) into what tokio-postgres parses
/// and the TLS parameters. The last `sslmode` or `sslrootcert` wins, as in tokio-postgres.
pub(crate) fn split(url: &str) -> Result<(String, TlsParams), SetupError> {
    let (rest, found) = if let Some(scheme_end) = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.starts_with(scheme).then_some(scheme.len()))
    {
        split_url_query(url, scheme_end)?
    } else {
        split_key_value(url)
    };
    let mut mode = None;
    let mut root_cert = None;
    for (key, value) in found {
        if UNSUPPORTED.contains(&key.as_str()) {
            return Err(SetupError::Settings(format!(
                "the database URL's {key} is not supported: client certificates and \
                 certificate revocation lists are not implemented"
            )));
        }
        if key == SSLMODE {
            mode = Some(SslMode::parse(&value)?);
        } else {
            root_cert = Some(value);
        }
    }
    let roots = match root_cert.as_deref() {
        None => Roots::Unset,
        Some("") => {
            return Err(SetupError::Settings(
                "the database URL's sslrootcert is empty: name a PEM file, or `system`".into(),
            ));
        }
        Some("system") => Roots::System,
        Some(path) => Roots::File(path.to_owned()),
    };
    let mode = match (mode, &roots) {
        // libpq 16: the system store is only worth anything with the host name checked.
        (None, Roots::System) => SslMode::VerifyFull,
        (Some(mode), Roots::System) if mode != SslMode::VerifyFull => {
            return Err(SetupError::Settings(format!(
                "the database URL's sslmode `{mode}` may not be used with sslrootcert=system \
                 (use verify-full)"
            )));
        }
        (mode, _) => mode.unwrap_or(SslMode::Prefer),
    };
    Ok((rest, TlsParams { mode, roots }))
}

/// The URL form: parameters are the `&`-separated, percent-encoded pairs after the first `?`
/// that follows the user information (as tokio-postgres reads it, a `?` before the first `@`
/// belongs to the password).
fn split_url_query(
    url: &str,
    scheme_end: usize,
) -> Result<(String, Vec<(String, String)>), SetupError> {
    let after_scheme = &url[scheme_end..];
    let host_start = scheme_end + after_scheme.find('@').map_or(0, |at| at + 1);
    let Some(query_start) = url[host_start..].find('?').map(|at| host_start + at) else {
        return Ok((url.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut found = Vec::new();
    for pair in url[query_start + 1..].split('&') {
        // A pair without `=` is left for tokio-postgres to refuse.
        let Some((key, value)) = pair.split_once('=') else {
            kept.push(pair);
            continue;
        };
        let key = decode(key, "a parameter name")?;
        if is_ours(&key) {
            let value = decode(value, &format!("the value of {key}"))?;
            found.push((key.into_owned(), value.into_owned()));
        } else {
            kept.push(pair);
        }
    }
    let mut rest = url[..query_start].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, found))
}

fn decode<'a>(text: &'a str, what: &str) -> Result<Cow<'a, str>, SetupError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| {
            SetupError::Settings(format!(
                "{what} in the database URL is not UTF-8 once percent-decoded"
            ))
        })
}

fn is_ours(key: &str) -> bool {
    key == SSLMODE || key == SSLROOTCERT || UNSUPPORTED.contains(&key)
}

/// The key=value form: `key = value` pairs separated by white space, a value either bare or in
/// single quotes, with `\` escaping the next character (tokio-postgres' grammar). Our pairs are
/// cut out; on anything that does not scan, the rest is left as it is for tokio-postgres to
/// refuse with its own message.
fn split_key_value(text: &str) -> (String, Vec<(String, String)>) {
    let mut scanner = Scanner { text, at: 0 };
    let mut rest = String::with_capacity(text.len());
    let mut kept_from = 0;
    let mut found = Vec::new();
    loop {
        scanner.skip_white_space();
        let start = scanner.at;
        let Some((key, value)) = scanner.pair() else {
            break;
        };
        if is_ours(key) {
            rest.push_str(&text[kept_from..start]);
            kept_from = scanner.at;
            found.push((key.to_owned(), value));
        }
    }
    rest.push_str(&text[kept_from..]);
    (rest, found)
}

/// Reads key=value pairs off the front of a connection string.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<char> {
        self.text[self.at..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        Some(c)
    }

    fn skip_white_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    /// One `key = value`, or `None` at the end or on a syntax error.
    fn pair(&mut self) -> Option<(&'a str, String)> {
        let start = self.at;
        while self.peek().is_some_and(|c| !c.is_whitespace() && c != '=') {
            self.bump();
        }
        let key = &self.text[start..self.at];
        if key.is_empty() {
            return None;
        }
        self.skip_white_space();
        if self.bump() != Some('=') {
            return None;
        }
        self.skip_white_space();
        let quoted = self.peek() == Some('\'');
        if quoted {
            self.bump();
        }
        let mut value = String::new();
        loop {
            match self.peek() {
                None if quoted => return None,
                None => break,
                Some('\'') if quoted => {
                    self.bump();
                    break;
                }
                Some(c) if !quoted && c.is_whitespace() => break,
                Some('\\') => {
                    self.bump();
                    value.extend(self.bump());
                }
                Some(c) => {
                    self.bump();
                    value.push(c);
                }
            }
        }
        (quoted || !value.is_empty()).then_some((key, value))
    }
}

impl TlsParams {
    /// The connector for these parameters. Reads `sslrootcert`, or the OS trust store for the
    /// `verify-*` modes without it, once, at start-up.
    pub(crate) fn connector(&self) -> Result<Tls, SetupError> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| SetupError::Settings(format!("TLS cannot be set up: {e}")))?;
        let algorithms = provider.signature_verification_algorithms;
        let roots = match (self.mode, &self.roots) {
            // libpq does not read the root file without TLS either.
            (SslMode::Disable, _)
            | (SslMode::Prefer | SslMode::Require, Roots::Unset | Roots::System) => None,
            (_, Roots::File(path)) => Some(roots_from_file(Path::new(path))?),
            (SslMode::VerifyCa | SslMode::VerifyFull, Roots::Unset | Roots::System) => {
                Some(system_roots()?)
            }
        };
        let mut config = match (self.mode, roots) {
            (SslMode::VerifyFull, Some(roots)) => builder.with_root_certificates(roots),
            (_, roots) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName {
                    roots: roots.map(Arc::new),
                    algorithms,
                })),
        }
        .with_no_client_auth();
        // PostgreSQL 17 insists on this ALPN name with `sslnegotiation=direct`; older servers
        // ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustlsConnect::new(config))
    }
}

/// The certificates of the PEM file at `path`, every one a trusted root.
fn roots_from_file(path: &Path) -> Result<RootCertStore, SetupError> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| {
        SetupError::Settings(format!(
            "the database URL's sslrootcert {shown} cannot be read: {e}"
        ))
    })?;
    let mut roots = RootCertStore::empty();
    for (n, cert) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let cert = cert.map_err(|e| {
            SetupError::Settings(format!(
                "the database URL's sslrootcert {shown} is not valid PEM: {e}"
            ))
        })?;
        roots.add(cert).map_err(|e| {
            SetupError::Settings(format!(
                "certificate {} of the database URL's sslrootcert {shown} cannot be a root: {e}",
                n + 1
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(SetupError::Settings(format!(
            "the database URL's sslrootcert {shown} holds no certificate \
             (expected PEM `-----BEGIN CERTIFICATE-----` blocks)"
        )));
    }
    Ok(roots)
}

/// The operating system's trusted roots.
fn system_roots() -> Result<RootCertStore, SetupError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    // The OS store holds the odd certificate webpki cannot use; skipping those is what every
    // client does.
    let (_added, ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(SetupError::Settings(format!(
            "no trusted root certificate found in the operating system's store for the \
             database's TLS ({}); install the CA certificates, or name a PEM file with \
             sslrootcert in the database URL",
            if errors.is_empty() {
                "it is empty".to_owned()
            } else {
                errors.join("; ")
            }
        )));
    }
    if ignored > 0 || !found.errors.is_empty() {
        tracing::debug!(
            ignored,
            errors = found.errors.len(),
            "some certificates of the OS trust store were not usable"
        );
    }
    Ok(roots)
}

/// Every mode below `verify-full`: the certificate's host name is never checked (libpq's
/// `verify-ca` allows servers reached by an address their certificate does not list), and its
/// chain is checked only against `roots`, when there are any (`verify-ca`, and `prefer` or
/// `require` with a root file, libpq's "if a root CA file exists" rule).
///
/// Without roots this is `sslmode=require` and `prefer` as libpq means them: encryption against
/// eavesdroppers, with no check of who answers. It exists because managed databases often
/// present certificates that no root at hand vouches for, and libpq accepts them in these
/// modes; operators who want more say `verify-ca` or `verify-full`. The handshake signatures
/// are verified either way, so the peer must hold the key of the certificate it showed: SCRAM
/// channel binding (`channel_binding=require` in the URL) builds on that certificate, and then
/// the server refuses a login relayed through a machine in the middle.
#[derive(Debug)]
struct AnyName {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mode: SslMode, roots: Roots) -> TlsParams {
        TlsParams { mode, roots }
    }

    #[test]
    fn url_parameters_are_taken_out_and_the_rest_kept_in_order() {
        let (rest, tls) = split(
            "postgres://app:s3cret@db:5432/registrar?application_name=x&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fssl%2Fca%20bundle.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://app:s3cret@db:5432/registrar?application_name=x&connect_timeout=3"
        );
        assert_eq!(
            tls,
            params(
                SslMode::VerifyFull,
                Roots::File("/etc/ssl/ca bundle.pem".into())
            )
        );
    }

    #[test]
    fn a_url_with_only_tls_parameters_loses_its_question_mark() {
        let (rest, tls) = split("postgresql://db/registrar?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://db/registrar");
        assert_eq!(tls, params(SslMode::Require, Roots::Unset));
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        let (rest, tls) = split("postgres://app:pa?ss@db/registrar?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://app:pa?ss@db/registrar");
        assert_eq!(tls.mode, SslMode::Disable);
    }

    #[test]
    fn without_sslmode_tls_is_preferred_as_in_libpq() {
        let (rest, tls) = split("postgres://db/registrar").unwrap();
        assert_eq!(rest, "postgres://db/registrar");
        assert_eq!(tls, params(SslMode::Prefer, Roots::Unset));
        assert_eq!(split("host=db").unwrap().1.mode, SslMode::Prefer);
    }

    #[test]
    fn key_value_strings_lose_their_tls_pairs_quoted_or_not() {
        let (rest, tls) =
            split("host=db sslmode = verify-ca user=app sslrootcert='/etc/my ca\\'s.pem' dbname=r")
                .unwrap();
        assert_eq!(rest, "host=db  user=app  dbname=r");
        assert_eq!(
            tls,
            params(SslMode::VerifyCa, Roots::File("/etc/my ca's.pem".into()))
        );
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_dbname(), Some("r"));
    }

    #[test]
    fn the_last_sslmode_wins() {
        let (_, tls) = split("postgres://db/r?sslmode=disable&sslmode=verify-full").unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
    }

    #[test]
    fn sslrootcert_system_means_verify_full_and_refuses_weaker_modes() {
        let (_, tls) = split("postgres://db/r?sslrootcert=system").unwrap();
        assert_eq!(tls, params(SslMode::VerifyFull, Roots::System));
        let error = split("postgres://db/r?sslrootcert=system&sslmode=require").unwrap_err();
        assert!(error.to_string().contains("verify-full"), "{error}");
    }

    #[test]
    fn unknown_modes_empty_roots_and_client_certificates_are_refused_without_the_password() {
        for (url, names) in [
            (
                "postgres://app:s3cret@db/r?sslmode=bogus",
                "sslmode `bogus`",
            ),
            (
                "postgres://app:s3cret@db/r?sslmode=verify-full&sslrootcert=",
                "sslrootcert",
            ),
            ("postgres://app:s3cret@db/r?sslcert=client.pem", "sslcert"),
            ("user=app password=s3cret sslmode=allow", "sslmode `allow`"),
        ] {
            let error = split(url).unwrap_err().to_string();
            assert!(error.contains(names), "{url}: {error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn verify_modes_are_require_on_the_wire() {
        use tokio_postgres::config::SslMode as Wire;
        assert_eq!(SslMode::VerifyCa.wire(), Wire::Require);
        assert_eq!(SslMode::VerifyFull.wire(), Wire::Require);
        assert_eq!(SslMode::Prefer.wire(), Wire::Prefer);
        assert_eq!(SslMode::Disable.wire(), Wire::Disable);
    }

    #[test]
    fn a_root_file_that_is_missing_or_holds_no_certificate_is_refused() {
        let missing = params(
            SslMode::VerifyFull,
            Roots::File("/nonexistent/ca.pem".into()),
        );
        let error = missing.connector().map(|_| ()).unwrap_err().to_string();
        assert!(
            error.contains("/nonexistent/ca.pem") && error.contains("cannot be read"),
            "{error}"
        );

        let empty =
            std::env::temp_dir().join(format!("registrar-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let no_certificate = params(
            SslMode::VerifyCa,
            Roots::File(empty.to_string_lossy().into_owned()),
        );
        let error = no_certificate
            .connector()
            .map(|_| ())
            .unwrap_err()
            .to_string();
        std::fs::remove_file(&empty).unwrap();
        assert!(error.contains("holds no certificate"), "{error}");
    }

    #[test]
    fn modes_that_check_nothing_read_no_root_file() {
        // libpq reads no root file without TLS; `require` without sslrootcert checks nothing.
        let disabled = params(SslMode::Disable, Roots::File("/nonexistent/ca.pem".into()));
        assert!(disabled.connector().is_ok());
        assert!(params(SslMode::Require, Roots::Unset).connector().is_ok());
    }
}
