//! Configuration: the `registrar` command line, each flag with its environment variable,
//! validated once at start-up into the typed settings each part of the service takes.

use std::{net::SocketAddr, num::NonZeroUsize, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use registrar_adapters_argon2::Argon2Settings;
use registrar_adapters_postgres::PgSettings;
use registrar_adapters_smtp::SmtpSettings;
use registrar_api::TrustedProxies;
use registrar_application::{AccountSettings, DeliveryPolicy, RateLimits, ports::Limit};
use registrar_domain::{CodePolicy, CodeSecret, PasswordPolicy};

/// Registrar: sign up with email and password, get a code by email, activate.
///
/// Without a subcommand, `registrar` serves (the flags are those of `registrar serve`).
#[derive(Debug, Parser)]
#[command(
    name = "registrar",
    version,
    about,
    propagate_version = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve`'s flags, for when no subcommand is given.
    #[command(flatten)]
    serve: Box<ServeArgs>,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Cli {
    /// The subcommand to run: `serve` when none was given.
    #[must_use]
    pub fn command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API and deliver the outbox.
    Serve(Box<ServeArgs>),
    /// Apply database migrations from `DATABASE_URL` and exit.
    Migrate(MigrateArgs),
    /// Ask the server on `REGISTRAR_LISTEN` whether it is ready: exit 0 when `/readyz`
    /// answers 200 within 3 s, else 1 (for a container `HEALTHCHECK`).
    Healthcheck(HealthcheckArgs),
}

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// How the process logs (filter from `RUST_LOG`, default `info`).
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long,
        env = "REGISTRAR_LOG_FORMAT",
        value_enum,
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// `registrar migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// How long to keep trying while the database is not reachable yet.
    #[arg(
        long,
        env = "REGISTRAR_DATABASE_STARTUP_TIMEOUT",
        default_value = "30s"
    )]
    pub database_startup_timeout: humantime::Duration,
}

impl MigrateArgs {
    /// The database settings for the migration.
    #[must_use]
    pub fn database(&self) -> PgSettings {
        PgSettings::new(self.database_url.clone())
    }
}

/// `registrar healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Address the server binds, as given to `serve`; an unspecified address (0.0.0.0, [::])
    /// is asked on loopback.
    #[arg(long, env = "REGISTRAR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// `registrar serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind.
    #[arg(long, env = "REGISTRAR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// PostgreSQL URL; unset = in-memory store (data is lost on exit). Migrations are applied at start-up.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Database connections in the pool.
    #[arg(long, env = "REGISTRAR_DATABASE_POOL_SIZE", default_value_t = PgSettings::DEFAULT_POOL_SIZE)]
    pub database_pool_size: usize,
    /// Longest wait to open a database connection.
    #[arg(long, env = "REGISTRAR_DATABASE_CONNECT_TIMEOUT", default_value = "2s")]
    pub database_connect_timeout: humantime::Duration,
    /// Longest wait for a free pooled connection.
    #[arg(long, env = "REGISTRAR_DATABASE_POOL_TIMEOUT", default_value = "2s")]
    pub database_pool_timeout: humantime::Duration,
    /// Longest a database statement may run.
    #[arg(
        long,
        env = "REGISTRAR_DATABASE_STATEMENT_TIMEOUT",
        default_value = "4s"
    )]
    pub database_statement_timeout: humantime::Duration,
    /// How long start-up keeps trying while the database is not reachable yet.
    #[arg(
        long,
        env = "REGISTRAR_DATABASE_STARTUP_TIMEOUT",
        default_value = "30s"
    )]
    pub database_startup_timeout: humantime::Duration,
    /// SMTP server URL in lettre syntax (e.g. `smtp://127.0.0.1:1025`); unset = codes are written to the log.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender of the activation email.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "Registrar <no-reply@localhost>"
    )]
    pub mail_from: String,
    /// Longest one delivery attempt to the SMTP server may take (connect to the reply to the data).
    #[arg(long, env = "SMTP_TIMEOUT", default_value = "10s")]
    pub smtp_timeout: humantime::Duration,
    /// The product name in the activation email.
    #[arg(long, env = "REGISTRAR_PRODUCT_NAME", default_value = "Registrar")]
    pub product_name: String,
    /// Code lifetime after the mail server accepted its email (humantime, e.g. 60s, 2m).
    #[arg(long, env = "ACTIVATION_CODE_TTL", default_value = "60s")]
    pub activation_code_ttl: humantime::Duration,
    /// Key for code HMACs (at least 16 bytes); set the same value on every replica. Unset = random per process.
    #[arg(long, env = "REGISTRAR_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Least time between two codes for one account (registration and takeover included).
    #[arg(long, env = "REGISTRAR_CODE_COOLDOWN", default_value = "30s")]
    pub code_cooldown: humantime::Duration,
    /// Wrong attempts that kill a code.
    #[arg(long, env = "REGISTRAR_CODE_ATTEMPTS", default_value_t = 5)]
    pub code_attempts: u32,
    /// Most codes per account per 24 hours.
    #[arg(long, env = "REGISTRAR_CODES_PER_DAY", default_value_t = 10)]
    pub codes_per_day: u32,
    /// Reverse proxies whose `X-Forwarded-For` entries name the client (comma-separated
    /// addresses or CIDR ranges); unset = the TCP peer is the client.
    #[arg(long, env = "REGISTRAR_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,
    /// `off` disables the per-address limits (for load tests); per-account limits stay.
    #[arg(long, env = "REGISTRAR_RATE_LIMITS", value_enum, default_value = "on")]
    pub rate_limits: Switch,
    /// Failed logins per account per window before 429.
    #[arg(
        long,
        env = "REGISTRAR_LOGIN_FAILURES_PER_ACCOUNT",
        default_value_t = 10
    )]
    pub login_failures_per_account: u32,
    /// Failed logins per client address per window before 429.
    #[arg(
        long,
        env = "REGISTRAR_LOGIN_FAILURES_PER_ADDRESS",
        default_value_t = 50
    )]
    pub login_failures_per_address: u32,
    /// The window failed logins are counted in.
    #[arg(long, env = "REGISTRAR_LOGIN_FAILURE_WINDOW", default_value = "15m")]
    pub login_failure_window: humantime::Duration,
    /// Registrations per client address per window before 429.
    #[arg(
        long,
        env = "REGISTRAR_REGISTRATIONS_PER_ADDRESS",
        default_value_t = 20
    )]
    pub registrations_per_address: u32,
    /// The window registrations are counted in.
    #[arg(long, env = "REGISTRAR_REGISTRATION_WINDOW", default_value = "10m")]
    pub registration_window: humantime::Duration,
    /// Least zxcvbn score (0–4) a new password must reach.
    #[arg(long, env = "REGISTRAR_PASSWORD_MIN_SCORE", default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=4))]
    pub password_min_score: u8,
    /// Argon2id memory cost in KiB.
    #[arg(long, env = "REGISTRAR_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    #[arg(long, env = "REGISTRAR_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    #[arg(long, env = "REGISTRAR_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,
    /// Password hashing threads (default: one per core).
    #[arg(long, env = "REGISTRAR_HASH_THREADS")]
    pub hash_threads: Option<NonZeroUsize>,
    /// Hard cap on hashing jobs waiting for a thread, a memory guard: beyond it requests get 503 at once (default: 256 per thread).
    #[arg(long, env = "REGISTRAR_HASH_QUEUE")]
    pub hash_queue: Option<NonZeroUsize>,
    /// Longest expected wait for a hashing thread before a request is refused with 503: a request is queued only if the work ahead of it (at the hash time the pool measures, spread over its threads) would let it start within this time; otherwise it gets 503 at once, with a Retry-After estimated from the queued work.
    #[arg(long, env = "REGISTRAR_HASH_QUEUE_TIMEOUT", default_value = "2s")]
    pub hash_queue_timeout: humantime::Duration,
    /// Delivery tries before an email (and its code) is given up.
    #[arg(long, env = "REGISTRAR_MAIL_MAX_ATTEMPTS", default_value_t = 12)]
    pub mail_max_attempts: u32,
    /// Give up on an email this long after it was queued.
    #[arg(long, env = "REGISTRAR_MAIL_MAX_AGE", default_value = "1h")]
    pub mail_max_age: humantime::Duration,
    /// Keep a sent, failed or cancelled email's outbox row this long after it was queued.
    #[arg(long, env = "REGISTRAR_MAIL_RETENTION", default_value = "7d")]
    pub mail_retention: humantime::Duration,
    /// Erase an account still pending this long after its last registration or takeover.
    #[arg(long, env = "REGISTRAR_PENDING_RETENTION", default_value = "7d")]
    pub pending_retention: humantime::Duration,
    /// How often settled email rows, ended throttle windows and expired pending accounts are
    /// purged (also once at start-up).
    #[arg(long, env = "REGISTRAR_PRUNE_INTERVAL", default_value = "1h")]
    pub prune_interval: humantime::Duration,
    /// How long a dispatcher's claim on an email lasts before another may take it.
    #[arg(long, env = "REGISTRAR_MAIL_LEASE", default_value = "30s")]
    pub mail_lease: humantime::Duration,
    /// How often the dispatcher looks for due email when nothing wakes it.
    #[arg(long, env = "REGISTRAR_MAIL_POLL", default_value = "1s")]
    pub mail_poll: humantime::Duration,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "REGISTRAR_HTTP_WORKERS")]
    pub http_workers: Option<NonZeroUsize>,
    /// How long a graceful shutdown waits for requests and sends in flight.
    #[arg(long, env = "REGISTRAR_SHUTDOWN_TIMEOUT", default_value = "30s")]
    pub shutdown_timeout: humantime::Duration,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to bind.
    pub listen: SocketAddr,
    /// PostgreSQL, or `None` for the in-memory store.
    pub database: Option<PgSettings>,
    /// SMTP, or `None` for the log mailer.
    pub smtp: Option<SmtpSettings>,
    /// Proxies trusted to name the client.
    pub trusted_proxies: TrustedProxies,
    /// How long start-up waits for the database.
    pub database_startup_timeout: Duration,
    /// Account use cases.
    pub accounts: AccountSettings,
    /// Whether the secret was generated for this process.
    pub secret_is_ephemeral: bool,
    /// Password hashing.
    pub argon2: Argon2Settings,
    /// Outbox delivery.
    pub delivery: DeliveryPolicy,
    /// Dispatcher poll interval.
    pub mail_poll: Duration,
    /// HTTP workers.
    pub http_workers: usize,
    /// Graceful shutdown limit.
    pub shutdown_timeout: Duration,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

impl ServeArgs {
    /// Validates the flags into [`Settings`]; `random_secret` is used when no secret is set.
    pub fn settings(&self, random_secret: [u8; 32]) -> anyhow::Result<Settings> {
        let smtp = self.smtp_url.as_ref().map(|url| {
            let mut smtp = SmtpSettings::new(url.clone());
            smtp.from.clone_from(&self.mail_from);
            smtp.timeout = self.smtp_timeout.into();
            smtp.product_name.clone_from(&self.product_name);
            smtp
        });
        let codes = CodePolicy::new(
            self.activation_code_ttl.into(),
            self.code_attempts,
            self.code_cooldown.into(),
            self.codes_per_day,
        )
        .context("invalid activation code settings")?;
        let (secret, secret_is_ephemeral) = match &self.secret {
            Some(secret) => (
                CodeSecret::new(secret.as_bytes()).context("invalid REGISTRAR_SECRET")?,
                false,
            ),
            None => (
                CodeSecret::new(random_secret).context("invalid random secret")?,
                true,
            ),
        };
        let limits = RateLimits {
            login_failures_per_account: Limit {
                max: self.login_failures_per_account,
                window: self.login_failure_window.into(),
            },
            login_failures_per_address: Limit {
                max: self.login_failures_per_address,
                window: self.login_failure_window.into(),
            },
            registrations_per_address: Limit {
                max: self.registrations_per_address,
                window: self.registration_window.into(),
            },
            per_address: self.rate_limits == Switch::On,
        };
        let threads = self.hash_threads.map_or_else(cores, NonZeroUsize::get);
        let argon2 = Argon2Settings {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
            threads,
            queue_capacity: self.hash_queue.map_or_else(
                || threads.saturating_mul(Argon2Settings::DEFAULT_QUEUE_PER_THREAD),
                NonZeroUsize::get,
            ),
            queue_timeout: self.hash_queue_timeout.into(),
        };
        argon2.validate().context("invalid Argon2 settings")?;
        let delivery = self.delivery(smtp.is_some())?;
        if self.database_pool_size == 0 {
            bail!("REGISTRAR_DATABASE_POOL_SIZE must be at least 1");
        }
        let database = self.database_url.as_ref().map(|url| {
            let mut database = PgSettings::new(url.clone());
            database.pool_size = self.database_pool_size;
            database.connect_timeout = self.database_connect_timeout.into();
            database.pool_wait_timeout = self.database_pool_timeout.into();
            database.statement_timeout = self.database_statement_timeout.into();
            database
        });
        Ok(Settings {
            listen: self.listen,
            database,
            smtp,
            trusted_proxies: self.trusted_proxies.clone(),
            database_startup_timeout: self.database_startup_timeout.into(),
            accounts: AccountSettings {
                codes,
                passwords: PasswordPolicy::with_min_score(self.password_min_score),
                secret,
                limits,
            },
            secret_is_ephemeral,
            argon2,
            delivery,
            mail_poll: self.mail_poll.into(),
            http_workers: self.http_workers.map_or_else(cores, NonZeroUsize::get),
            shutdown_timeout: self.shutdown_timeout.into(),
        })
    }

    /// The dispatcher's policy; `sends` when a mail server is configured.
    fn delivery(&self, sends: bool) -> anyhow::Result<DeliveryPolicy> {
        if self.mail_max_attempts == 0 {
            bail!("REGISTRAR_MAIL_MAX_ATTEMPTS must be at least 1");
        }
        // A claim that ran out while its send is still in flight would let the message be
        // claimed and sent again, by this replica or another.
        if sends && Duration::from(self.mail_lease) <= Duration::from(self.smtp_timeout) {
            bail!(
                "REGISTRAR_MAIL_LEASE ({}) must be longer than SMTP_TIMEOUT ({}), or an email \
                 still being sent could be claimed and sent again",
                self.mail_lease,
                self.smtp_timeout
            );
        }
        if Duration::from(self.prune_interval).is_zero() {
            bail!("REGISTRAR_PRUNE_INTERVAL must be longer than zero");
        }
        Ok(DeliveryPolicy {
            lease: self.mail_lease.into(),
            max_attempts: self.mail_max_attempts,
            max_age: self.mail_max_age.into(),
            retention: self.mail_retention.into(),
            pending_retention: self.pending_retention.into(),
            prune_interval: self.prune_interval.into(),
            ..DeliveryPolicy::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Settings> {
        let cli = Cli::try_parse_from(["registrar", "serve"].iter().chain(args))?;
        let Command::Serve(serve) = cli.command() else {
            unreachable!()
        };
        serve.settings([9; 32])
    }

    #[test]
    fn serve_is_the_default_subcommand() {
        let bare = Cli::try_parse_from(["registrar", "--listen", "127.0.0.1:9999"]).unwrap();
        let Command::Serve(serve) = bare.command() else {
            panic!("expected serve")
        };
        assert_eq!(serve.listen.to_string(), "127.0.0.1:9999");
        let migrate =
            Cli::try_parse_from(["registrar", "migrate", "--database-url", "postgres://x"])
                .unwrap();
        assert!(matches!(migrate.command(), Command::Migrate(_)));
        let healthcheck =
            Cli::try_parse_from(["registrar", "healthcheck", "--listen", "0.0.0.0:9999"]).unwrap();
        let Command::Healthcheck(healthcheck) = healthcheck.command() else {
            panic!("expected healthcheck")
        };
        assert_eq!(healthcheck.listen.to_string(), "0.0.0.0:9999");
    }

    #[test]
    fn defaults_follow_the_contract() {
        let settings = parse(&[]).unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.accounts.codes, CodePolicy::default());
        assert_eq!(settings.accounts.limits, RateLimits::default());
        assert_eq!(settings.accounts.passwords, PasswordPolicy::default());
        assert!(settings.secret_is_ephemeral);
        assert_eq!(
            (
                settings.argon2.memory_kib,
                settings.argon2.iterations,
                settings.argon2.parallelism
            ),
            (19_456, 2, 1)
        );
        assert_eq!(settings.delivery.lease, Duration::from_secs(30));
        assert!(settings.database.is_none());
        assert!(settings.trusted_proxies.is_empty());
    }

    #[test]
    fn flags_override_defaults() {
        let settings = parse(&[
            "--activation-code-ttl",
            "2m",
            "--code-cooldown",
            "5s",
            "--code-attempts",
            "3",
            "--rate-limits",
            "off",
            "--secret",
            "0123456789abcdef0123",
        ])
        .unwrap();
        assert_eq!(
            settings.accounts.codes,
            CodePolicy::new(Duration::from_mins(2), 3, Duration::from_secs(5), 10).unwrap()
        );
        assert!(!settings.accounts.limits.per_address);
        assert!(!settings.secret_is_ephemeral);
    }

    #[test]
    fn unbuilt_backends_and_bad_values_are_refused_loudly() {
        let message = |args: &[&str]| parse(args).unwrap_err().to_string();
        assert!(message(&["--secret", "short"]).contains("REGISTRAR_SECRET"));
        assert!(message(&["--activation-code-ttl", "0s"]).contains("activation code"));
        assert!(parse(&["--activation-code-ttl", "soon"]).is_err());
        assert!(parse(&["--password-min-score", "5"]).is_err());
        assert!(parse(&["--trusted-proxies", "10.0.0.0/99"]).is_err());
        let smtp = ["--smtp-url", "smtp://127.0.0.1:1025"];
        let lease_within_timeout = [&smtp[..], &["--smtp-timeout", "30s"]].concat();
        assert!(message(&lease_within_timeout).contains("REGISTRAR_MAIL_LEASE"));
        let longer_lease = [&lease_within_timeout[..], &["--mail-lease", "31s"]].concat();
        assert!(parse(&longer_lease).is_ok());
    }
}
