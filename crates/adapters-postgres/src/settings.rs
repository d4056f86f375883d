//! The store's own small settings: where the database is, how many connections to keep and how
//! long anything may take. The bin fills them from its configuration; nothing else is read here.

use std::{fmt, str::FromStr, time::Duration};

use crate::{
    SetupError,
    tls::{self, Tls},
};

/// How to reach PostgreSQL and how long to wait for it.
///
/// Every store operation (waiting for a pooled connection, connecting, and the statements) is
/// bounded by [`statement_timeout`](Self::statement_timeout) as a whole, so a request facing an
/// unreachable database fails with `StoreError::Unavailable` within that time instead of hanging.
///
/// ```
/// use std::time::Duration;
/// use registrar_adapters_postgres::PgSettings;
///
/// let mut settings = PgSettings::new("postgres://registrar@db.internal/registrar");
/// settings.pool_size = 32;
/// settings.statement_timeout = Duration::from_secs(3);
/// assert!(!format!("{settings:?}").contains("secret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// A libpq-style URL (`postgres://user:password@host:port/dbname?options`) or key=value
    /// string, as `tokio_postgres::Config` parses it, plus libpq's TLS parameters: `sslmode`
    /// (`disable`, `prefer` when absent, `require`, `verify-ca`, `verify-full`) and
    /// `sslrootcert` (a PEM file of trusted roots, or `system`). As in libpq, `prefer` and
    /// `require` encrypt but do not check the server's certificate (unless `sslrootcert` names
    /// a file); the `verify-*` modes check it against `sslrootcert` or the operating system's
    /// trust store, and `verify-full` the host name too. The crate documentation has the details.
    pub url: String,
    /// Most connections the pool keeps open. Default: [`Self::DEFAULT_POOL_SIZE`].
    pub pool_size: usize,
    /// Longest wait for a new connection, TCP connect and start-up together.
    /// Default: [`Self::DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// Longest wait for a free pooled connection when all are busy.
    /// Default: [`Self::DEFAULT_POOL_WAIT_TIMEOUT`].
    pub pool_wait_timeout: Duration,
    /// The server's `statement_timeout` for every session of the pool, and the client-side
    /// bound on a whole store operation. Default: [`Self::DEFAULT_STATEMENT_TIMEOUT`].
    pub statement_timeout: Duration,
}

impl PgSettings {
    /// Default for [`pool_size`](Self::pool_size).
    pub const DEFAULT_POOL_SIZE: usize = 16;
    /// Default for [`connect_timeout`](Self::connect_timeout).
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default for [`pool_wait_timeout`](Self::pool_wait_timeout).
    pub const DEFAULT_POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default for [`statement_timeout`](Self::statement_timeout).
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(4);

    /// Settings for the database at `url`, with the default pool size and timeouts.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: Self::DEFAULT_POOL_SIZE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            pool_wait_timeout: Self::DEFAULT_POOL_WAIT_TIMEOUT,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
        }
    }

    /// The connection configuration for the pool's sessions (the URL plus the timeouts, the
    /// server-side statement timeout and an application name) and the TLS connector that every
    /// connection of the store uses. Reads `sslrootcert` (or the OS trust store) now, so that a
    /// bad one stops the service at start-up.
    pub(crate) fn pg_config(&self) -> Result<(tokio_postgres::Config, Tls), SetupError> {
        if self.pool_size == 0 {
            return Err(SetupError::Settings(
                "the pool size must be at least 1".into(),
            ));
        }
        for (name, value) in [
            ("connect timeout", self.connect_timeout),
            ("pool wait timeout", self.pool_wait_timeout),
            ("statement timeout", self.statement_timeout),
        ] {
            if value < Duration::from_millis(1) {
                return Err(SetupError::Settings(format!(
                    "the {name} must be at least 1 ms"
                )));
            }
        }
        // tokio-postgres refuses libpq's `sslrootcert` and the `verify-*` modes: they are taken
        // out here and turned into its `sslmode` plus the connector's certificate check.
        let (url, tls) = tls::split(&self.url)?;
        let mut config = tokio_postgres::Config::from_str(&url).map_err(|e| {
            // The parser's message names the bad part but never repeats the password.
            SetupError::Settings(format!("the database URL does not parse: {e}"))
        })?;
        config.ssl_mode(tls.mode.wire());
        if config.get_hosts().is_empty() {
            return Err(SetupError::Settings(
                "the database URL names no host".into(),
            ));
        }
        let millis = self.statement_timeout.as_millis();
        // A session that is left in an open transaction (its client vanished mid-save) gives
        // its locks back after the same time instead of holding them until TCP notices.
        add_session_options(
            &mut config,
            &format!(
                "-c statement_timeout={millis} -c idle_in_transaction_session_timeout={millis}"
            ),
        );
        config.connect_timeout(self.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("registrar");
        }
        Ok((config, tls.connector()?))
    }
}

/// Adds `options` (`-c name=value …`) to the sessions' startup options, after any the URL gave.
fn add_session_options(config: &mut tokio_postgres::Config, options: &str) {
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {options}"),
        _ => options.to_owned(),
    };
    config.options(options);
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_wait_timeout", &self.pool_wait_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// The URL with any password replaced, so settings can be logged.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some((userinfo, host)) = authority.rsplit_once('@')
            && let Some((user, _password)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{host}{tail}");
        }
        return url.to_owned();
    }
    // key=value form: mask the value after `password=` (quoted or not).
    url.split_whitespace()
        .map(|pair| {
            if pair.to_ascii_lowercase().starts_with("password=") {
                "password=***"
            } else {
                pair
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password() {
        let settings = PgSettings::new("postgres://app:s3cret@db:5432/registrar?sslmode=disable");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://app:***@db:5432/registrar?sslmode=disable"));
        let key_value = PgSettings::new("host=db user=app password=s3cret dbname=registrar");
        let shown = format!("{key_value:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("host=db"));
    }

    #[test]
    fn urls_without_a_password_show_unchanged() {
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5432/registrar"),
            "postgres://postgres@127.0.0.1:5432/registrar"
        );
    }

    #[test]
    fn the_session_gets_the_statement_timeout_and_keeps_given_options() {
        let mut settings = PgSettings::new("postgres://u@h/db?options=-c%20search_path%3Dapp");
        settings.statement_timeout = Duration::from_millis(1500);
        let (config, _) = settings.pg_config().unwrap();
        assert_eq!(
            config.get_options(),
            Some(
                "-c search_path=app -c statement_timeout=1500 \
                 -c idle_in_transaction_session_timeout=1500"
            )
        );
        assert_eq!(
            config.get_connect_timeout(),
            Some(&settings.connect_timeout)
        );
        assert_eq!(config.get_application_name(), Some("registrar"));
    }

    #[test]
    fn libpq_tls_parameters_become_tokio_postgres_ssl_modes() {
        use tokio_postgres::config::SslMode;
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/postgres/unrelated-ca.pem"
        );
        for (params, wire) in [
            (String::new(), SslMode::Prefer),
            ("?sslmode=disable".to_owned(), SslMode::Disable),
            ("?sslmode=require".to_owned(), SslMode::Require),
            (
                format!("?sslmode=verify-ca&sslrootcert={root}&application_name=x"),
                SslMode::Require,
            ),
            (
                format!("?sslrootcert={root}&sslmode=verify-full"),
                SslMode::Require,
            ),
        ] {
            let settings = PgSettings::new(format!("postgres://u@h/db{params}"));
            let (config, _) = settings.pg_config().unwrap();
            assert_eq!(config.get_ssl_mode(), wire, "{params}");
        }
    }

    #[test]
    fn unusable_settings_are_refused() {
        assert!(PgSettings::new("not a url at all ===").pg_config().is_err());
        let mut empty_pool = PgSettings::new("postgres://u@h/db");
        empty_pool.pool_size = 0;
        assert!(empty_pool.pg_config().is_err());
        let mut no_time = PgSettings::new("postgres://u@h/db");
        no_time.statement_timeout = Duration::ZERO;
        assert!(no_time.pg_config().is_err());
    }
}
