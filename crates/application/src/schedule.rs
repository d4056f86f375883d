//! The dispatcher's schedule: when the outbox is worked through and pruned, and the figures it
//! reports on the way. The binary only starts it; what it does on each beat is the use case's.

use std::time::Duration;

use tokio::sync::watch;

use crate::{
    DispatchSignal, Dispatcher, ErrorChain,
    ports::{Clock, Entropy, Mailer, Pruned, Store},
};

/// How often the dispatcher prunes settled mail and throttle windows that are over.
pub const PRUNE_EVERY: Duration = Duration::from_hours(1);

impl<S, M, C, E> Dispatcher<S, M, C, E>
where
    S: Store,
    M: Mailer,
    C: Clock,
    E: Entropy,
{
    /// Delivers due email whenever `signal` wakes it (mail queued in this process) or every
    /// `poll`, keeps the `registrar_outbox_depth` gauge, and prunes every [`PRUNE_EVERY`]
    /// (first at start-up), until `stop` holds `true`; a pass in progress is always finished.
    pub async fn run(
        &self,
        signal: DispatchSignal,
        poll: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut next_prune = tokio::time::Instant::now();
        loop {
            let busy = match self.deliver_due().await {
                Ok(report) => report.handled() > 0,
                Err(error) => {
                    tracing::warn!(error = %ErrorChain(&error), "could not claim outbox messages");
                    false
                }
            };
            if let Ok(depth) = self.depth().await {
                #[allow(
                    clippy::cast_precision_loss,
                    reason = "a gauge; exact above 2^53 messages does not matter"
                )]
                metrics::gauge!("registrar_outbox_depth").set(depth as f64);
            }
            if tokio::time::Instant::now() >= next_prune {
                self.prune_and_report().await;
                next_prune = tokio::time::Instant::now() + PRUNE_EVERY;
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

    /// One prune, logged and counted; a failure waits for the next one.
    async fn prune_and_report(&self) {
        match self.prune().await {
            Ok(pruned) => {
                metrics::counter!("registrar_pruned_total", "what" => "mail")
                    .increment(pruned.mail);
                metrics::counter!("registrar_pruned_total", "what" => "throttles")
                    .increment(pruned.throttles);
                if pruned != Pruned::default() {
                    tracing::info!(
                        mail = pruned.mail,
                        throttles = pruned.throttles,
                        "pruned settled mail and throttle windows that are over"
                    );
                }
            }
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "could not prune the store");
            }
        }
    }
}
