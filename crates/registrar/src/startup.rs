//! Wiring: builds the adapters and use cases from the settings, and runs the HTTP server and
//! the outbox dispatcher until the process is asked to stop.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{HttpServer, dev::Server, web};
use anyhow::Context;
use registrar_adapters_argon2::Argon2Hasher;
use registrar_adapters_memory::MemoryStore;
use registrar_adapters_smtp::LogMailer;
use registrar_api::MetricsSource;
use registrar_application::{AccountService, DispatchSignal, Dispatcher, OsEntropy, SystemClock};
use tokio::{sync::watch, task::JoinHandle};

use crate::config::Settings;

/// The account use cases as this binary runs them.
pub type Accounts = AccountService<MemoryStore, Argon2Hasher, SystemClock, OsEntropy>;
/// The outbox dispatcher as this binary runs it.
pub type Delivery = Dispatcher<MemoryStore, LogMailer, SystemClock, OsEntropy>;

/// A built service: bound, not yet running.
pub struct Application {
    port: u16,
    server: Server,
    dispatcher: Arc<Delivery>,
    signal: DispatchSignal,
    poll: Duration,
    shutdown_timeout: Duration,
}

impl Application {
    /// Builds adapters and use cases and binds the listener. `metrics` renders `/metrics`.
    pub fn build(settings: &Settings, metrics: MetricsSource) -> anyhow::Result<Self> {
        let store = MemoryStore::new();
        let hasher = Argon2Hasher::new(settings.argon2.clone())
            .context("could not start the password hashing pool")?;
        let signal = DispatchSignal::default();
        let accounts: Accounts = AccountService::new(
            store.clone(),
            hasher,
            SystemClock,
            OsEntropy,
            settings.accounts.clone(),
            signal.clone(),
        );
        let dispatcher = Arc::new(Dispatcher::new(
            store,
            LogMailer,
            SystemClock,
            OsEntropy,
            settings.accounts.codes,
            settings.delivery,
        ));
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("could not bind {}", settings.listen))?;
        let port = listener
            .local_addr()
            .context("could not read the bound address")?
            .port();
        let accounts = web::Data::new(accounts);
        let metrics = web::Data::new(metrics);
        let server = HttpServer::new(move || registrar_api::app(accounts.clone(), metrics.clone()))
            .workers(settings.http_workers)
            .shutdown_timeout(settings.shutdown_timeout.as_secs())
            .listen(listener)
            .context("could not listen")?
            .run();
        tracing::info!(address = %settings.listen.ip(), port, "listening");
        Ok(Self {
            port,
            server,
            dispatcher,
            signal,
            poll: settings.mail_poll,
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
        let (stop, stopped) = watch::channel(false);
        let dispatcher = tokio::spawn(run_dispatcher(
            self.dispatcher,
            self.signal,
            self.poll,
            stopped,
        ));
        let served = self.server.await.context("the HTTP server failed");
        tracing::info!("HTTP server stopped; finishing email sends in flight");
        let _ = stop.send(true);
        finish(dispatcher, self.shutdown_timeout).await;
        served
    }
}

async fn finish(task: JoinHandle<()>, limit: Duration) {
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(())) => tracing::info!("dispatcher stopped"),
        Ok(Err(error)) => tracing::error!(%error, "the dispatcher task failed"),
        Err(_) => tracing::warn!("the dispatcher did not stop in time"),
    }
}

/// Delivers due email whenever woken (mail queued in this process) or every `poll`, until
/// `stop` says so; a pass in progress is always finished.
async fn run_dispatcher(
    dispatcher: Arc<Delivery>,
    signal: DispatchSignal,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let busy = match dispatcher.deliver_due().await {
            Ok(report) => report.handled() > 0,
            Err(error) => {
                tracing::warn!(%error, "could not claim outbox messages");
                false
            }
        };
        if let Ok(depth) = dispatcher.depth().await {
            #[allow(
                clippy::cast_precision_loss,
                reason = "a gauge; exact above 2^53 messages does not matter"
            )]
            metrics::gauge!("registrar_outbox_depth").set(depth as f64);
        }
        if *stop.borrow() {
            return;
        }
        if busy {
            continue;
        }
        tokio::select! {
            () = signal.notified() => {}
            () = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
    }
}
