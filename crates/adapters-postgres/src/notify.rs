//! Cross-replica wake-ups: a trigger (migration V3) notifies channel `registrar_outbox` when a
//! transaction queues mail, and [`PgStore::forward_mail_notifications`] turns each notification
//! into a poke of this process's dispatcher, so another replica's registration is delivered at
//! once rather than at the next poll.

use std::time::Duration;

use futures_util::{StreamExt, stream};
use registrar_application::DispatchSignal;
use tokio_postgres::AsyncMessage;

use crate::PgStore;

/// The notification channel the outbox trigger uses.
const CHANNEL: &str = "registrar_outbox";

/// Wait before listening again after the connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

impl PgStore {
    /// Pokes `signal` whenever any replica queues mail, and once after every (re)connection,
    /// since notifications sent while disconnected are lost. Runs until the future is dropped,
    /// on a connection of its own (outside the pool, with the pool's TLS settings), reconnecting
    /// when it fails.
    pub async fn forward_mail_notifications(&self, signal: DispatchSignal) {
        loop {
            match self.listen(&signal).await {
                Ok(()) => tracing::warn!("mail notifications: the database closed the connection"),
                Err(error) => tracing::warn!(%error, "mail notifications: connection failed"),
            }
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }

    async fn listen(&self, signal: &DispatchSignal) -> Result<(), tokio_postgres::Error> {
        // The pool's configuration and TLS: the same server, checked the same way.
        let (client, mut connection) = self.config().connect(self.tls().clone()).await?;
        // The connection makes progress only while it is polled, so it is driven alongside LISTEN.
        let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
        let statement = format!("LISTEN {CHANNEL}");
        let listen = client.batch_execute(&statement);
        tokio::pin!(listen);
        loop {
            tokio::select! {
                listened = &mut listen => {
                    listened?;
                    break;
                }
                message = messages.next() => match message {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error),
                    None => return Ok(()),
                },
            }
        }
        tracing::debug!("listening for mail notifications");
        signal.notify();
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notification(_) = message? {
                signal.notify();
            }
        }
        Ok(())
    }
}
