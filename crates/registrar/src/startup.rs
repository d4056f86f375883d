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
use registrar_api::{MetricsSource, RefusalPacer};
use registrar_application::{
    AccountService, DispatchSignal, Dispatcher, OsEntropy, SystemClock, ports::Store,
};
use tokio::sync::watch;

use crate::{config::Settings, telemetry::ProcessTraces};

/// `overloaded` refusals answered at once per hash time, per hashing thread. A refusal on a fresh
/// connection costs the server's core up to about 1 % of a hash, mostly in the kernel (0.4 ms
/// against a 40 ms hash on a slowed virtual machine), and both get slower or faster with the
/// machine, so a pace counted in hashes rather than in seconds leaves refusals a few percent of
/// each core, the rest to the hashes admitted, however fast the machine is that day.
const REFUSALS_PER_HASH: u32 = 3;

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
    /// binds the listener. `metrics` renders `/metrics`; `traces` is telemetry's trace port.
    pub async fn build(
        settings: &Settings,
        metrics: MetricsSource,
        traces: ProcessTraces,
    ) -> anyhow::Result<Self> {
        let signal = DispatchSignal::default();
        if let Some(database) = &settings.database {
            let store = connect(database, settings.database_startup_timeout).await?;
            return Self::with_store(store, signal, settings, metrics, traces);
        }
        tracing::warn!(
            "no DATABASE_URL: data lives in memory only and is lost when the process stops"
        );
        Self::with_store(MemoryStore::new(), signal, settings, metrics, traces)
    }

    fn with_store<S: Store + Clone>(
        store: S,
        signal: DispatchSignal,
        settings: &Settings,
        metrics: MetricsSource,
        traces: ProcessTraces,
    ) -> anyhow::Result<Self> {
        let hasher = Argon2Hasher::new(settings.argon2.clone())
            .context("could not start the password hashing pool")?;
        let mailer = mailer(settings)?;
        let pacing = hasher.clone();
        let accounts = web::Data::new(AccountService::new(
            store.clone(),
            hasher,
            SystemClock,
            OsEntropy,
            traces,
            settings.accounts.clone(),
            signal.clone(),
        ));
        let dispatcher = Dispatcher::new(
            store,
            mailer,
            SystemClock,
            OsEntropy,
            traces,
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
        let pacer = web::Data::new(RefusalPacer::new({
            let threads = settings.argon2.threads;
            move || refusal_interval(pacing.hash_time(), threads)
        }));
        let proxies = web::Data::new(settings.trusted_proxies.clone());
        let server = HttpServer::new(move || {
            registrar_api::app(accounts.clone(), metrics.clone(), pacer.clone())
                .app_data(proxies.clone())
        })
        .workers(settings.http_workers)
        // The signals are ours: the shutdown as a whole, HTTP drain and email sends together,
        // is bounded by one deadline (`run_until_stopped`).
        .disable_signals()
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

    /// Serves until SIGTERM or Ctrl-C, then stops accepting connections and lets the requests
    /// and email sends in flight finish, side by side, within the shutdown timeout counted
    /// from the signal; whatever is still running then is abandoned (an email send abandoned
    /// mid-way is retried once its lease runs out).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut http = tokio::spawn(self.server);
        let mut dispatcher = tokio::spawn(self.dispatcher);
        tokio::select! {
            ended = &mut http => {
                // The server stopped by itself: nothing is left to drain but the dispatcher.
                let _ = self.stop.send(true);
                let _ = tokio::time::timeout(self.shutdown_timeout, dispatcher).await;
                return ended
                    .context("the HTTP server task failed")?
                    .context("the HTTP server failed");
            }
            signal = shutdown_signal() => signal?,
        }
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        tracing::info!(
            timeout_seconds = self.shutdown_timeout.as_secs(),
            "shutting down: finishing requests and email sends in flight"
        );
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout_at(deadline, async {
            let (ended, delivered) = tokio::join!(
                async {
                    handle.stop(true).await;
                    (&mut http).await
                },
                &mut dispatcher,
            );
            if let Err(error) = delivered {
                tracing::error!(%error, "the dispatcher task failed");
            }
            ended
        })
        .await;
        let Ok(ended) = drained else {
            tracing::warn!("the shutdown timeout ran out; abandoning what is still running");
            handle.stop(false).await;
            dispatcher.abort();
            return Ok(());
        };
        tracing::info!("stopped");
        ended
            .context("the HTTP server task failed")?
            .context("the HTTP server failed")
    }
}

/// Resolves at the first SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("could not listen for SIGTERM")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        interrupted = tokio::signal::ctrl_c() => {
            interrupted.context("could not listen for Ctrl-C")?;
            tracing::info!("Ctrl-C received");
        }
    }
    Ok(())
}

/// The time between two refusals at their pace, for a pool of `threads` threads that take
/// `hash_time` a job.
fn refusal_interval(hash_time: Duration, threads: usize) -> Duration {
    u32::try_from(threads)
        .ok()
        .and_then(|threads| threads.checked_mul(REFUSALS_PER_HASH))
        .and_then(|refusals| hash_time.checked_div(refusals))
        .unwrap_or(Duration::ZERO)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_go_at_three_per_hash_time_on_each_thread() {
        let hash = Duration::from_millis(42);

        assert_eq!(refusal_interval(hash, 1), Duration::from_millis(14));
        assert_eq!(refusal_interval(hash, 2), Duration::from_millis(7));
        assert_eq!(
            refusal_interval(hash, 0),
            Duration::ZERO,
            "no threads, no pace"
        );
    }
}
