//! Wakes the dispatcher as soon as a use case queues mail, instead of waiting for its next poll.

use std::sync::Arc;

use tokio::sync::Notify;

/// A shared wake-up call from the use cases that queue mail to the dispatcher loop.
#[derive(Debug, Clone, Default)]
pub struct DispatchSignal(Arc<Notify>);

impl DispatchSignal {
    /// Says that mail was queued. A wake-up given while nobody waits is kept for the next wait.
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// Waits for the next wake-up.
    pub async fn notified(&self) {
        self.0.notified().await;
    }
}
