//! Wiring: builds the adapters and use cases from the settings, and runs the HTTP server and
//! the outbox dispatcher until the process is asked to stop.

use std::{
    future::Future,
    net::TcpListener,
    pin::Pin,
    time::{Duration, Instant},
};

use actix_web::{HttpServer, dev::Server, web};
use anyhow::Context;
use registrar_adapters_argon2::Argon2Hasher;
use registrar_adapters_memory::MemoryStore;
use registrar_adapters_postgres::{PgSettings, PgStore, SetupError};
use registrar_adapters_smtp::{AnyMailer, LogMailer, SmtpMailer};
use registrar_api::MetricsSource;
use registrar_application::{
    AccountService, DispatchSignal, Dispatcher, OsEntropy, SystemClock, ports::Store,
};
use tokio::sync::watch;

use crate::config::Settings;

/// The dispatcher loop, built for whichever store was chosen.
type DispatcherLoop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A built service: bound, not yet running.
pub struct Application {
    port: u16,
    server: Server,
    dispatcher: DispatcherLoop,
    stop: watch::Sender<bool>,
    shutdown_timeout: Duration,
}

impl Application {
    /// Builds adapters and use cases, applies database migrations when there is a database, and
    /// binds the listener. `metrics` renders `/metrics`.
    pub async fn build(settings: &Settings, metrics: MetricsSource) -> anyhow::Result<Self> {
        let signal = DispatchSignal::default();
        if let Some(database) = &settings.database {
            let store = connect(database, settings.database_startup_timeout).await?;
            // Another replica's registrations wake this dispatcher too.
            tokio::spawn({
                let (store, signal) = (store.clone(), signal.clone());
                async move { store.forward_mail_notifications(signal).await }
            });
            return Self::with_store(store, signal, settings, metrics);
        }
        tracing::warn!(
            "no DATABASE_URL: data lives in memory only and is lost when the process stops"
        );
        Self::with_store(MemoryStore::new(), signal, settings, metrics)
    }

    fn with_store<S: Store + Clone>(
        store: S,
        signal: DispatchSignal,
        settings: &Settings,
        metrics: MetricsSource,
    ) -> anyhow::Result<Self> {
        let hasher = Argon2Hasher::new(settings.argon2.clone())
            .context("could not start the password hashing pool")?;
        let mailer = mailer(settings)?;
        let accounts = web::Data::new(AccountService::new(
            store.clone(),
            hasher,
            SystemClock,
            OsEntropy,
            settings.accounts.clone(),
            signal.clone(),
        ));
        let dispatcher = Dispatcher::new(
            store,
            mailer,
            SystemClock,
            OsEntropy,
            settings.accounts.codes,
            settings.delivery,
        );
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("could not bind {}", settings.listen))?;
        let port = listener
            .local_addr()
            .context("could not read the bound address")?
            .port();
        let metrics = web::Data::new(metrics);
        let proxies = web::Data::new(settings.trusted_proxies.clone());
        let server = HttpServer::new(move || {
            registrar_api::app(accounts.clone(), metrics.clone()).app_data(proxies.clone())
        })
        .workers(settings.http_workers)
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
        .listen(listener)
        .context("could not listen")?
        .run();
        tracing::info!(address = %settings.listen.ip(), port, "listening");
        let (stop, stopped) = watch::channel(false);
        Ok(Self {
            port,
            server,
            dispatcher: Box::pin({
                let poll = settings.mail_poll;
                async move { dispatcher.run(signal, poll, stopped).await }
            }),
            stop,
            shutdown_timeout: settings.shutdown_timeout,
        })
    }

    /// The bound port (useful when binding port 0).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or Ctrl-C, then lets requests and email sends in flight finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let dispatcher = tokio::spawn(self.dispatcher);
        let served = self.server.await.context("the HTTP server failed");
        tracing::info!("HTTP server stopped; finishing email sends in flight");
        let _ = self.stop.send(true);
        match tokio::time::timeout(self.shutdown_timeout, dispatcher).await {
            Ok(Ok(())) => tracing::info!("dispatcher stopped"),
            Ok(Err(error)) => tracing::error!(%error, "the dispatcher task failed"),
            Err(_) => tracing::warn!("the dispatcher did not stop in time"),
        }
        served
    }
}

/// The SMTP mailer when `SMTP_URL` is set, else the log mailer; a wrong URL or sender stops
/// start-up here.
fn mailer(settings: &Settings) -> anyhow::Result<AnyMailer> {
    let Some(smtp) = &settings.smtp else {
        tracing::warn!(
            "no SMTP_URL: activation codes are written to this log instead of being emailed"
        );
        return Ok(AnyMailer::Log(LogMailer));
    };
    let mailer = SmtpMailer::new(smtp).context("invalid SMTP settings")?;
    tracing::info!(
        server = %mailer.server(),
        from = %mailer.sender(),
        "activation emails go out over SMTP"
    );
    Ok(AnyMailer::Smtp(Box::new(mailer)))
}

/// Connects to PostgreSQL and applies pending migrations, retrying for up to `patience` while
/// the database cannot be reached yet (a database starting next to the service); a failing
/// migration is not retried.
pub async fn connect(settings: &PgSettings, patience: Duration) -> anyhow::Result<PgStore> {
    let store = PgStore::new(settings).context("invalid DATABASE_URL")?;
    let deadline = Instant::now() + patience;
    loop {
        match store.migrate().await {
            Ok(()) => {
                tracing::info!("database migrations are up to date");
                return Ok(store);
            }
            Err(error @ SetupError::Connect(_)) if Instant::now() < deadline => {
                tracing::warn!(%error, "database not ready; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                return Err(error).context("could not apply the database migrations");
            }
        }
    }
}
