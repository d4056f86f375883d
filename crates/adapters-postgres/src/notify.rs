//! Cross-replica wake-ups: a trigger (migrations V3, V7 and V8) notifies channel
//! `registrar_outbox` when a statement queues mail, with the id of the replica that queued it
//! (each store's sessions carry theirs in the setting `registrar.replica`), and
//! [`PgStore::forward_mail_notifications`] turns each notification from another replica into a
//! poke of this process's dispatcher, so that replica's registration is delivered at once
//! rather than at the next poll.

use std::{pin::pin, time::Duration};

use futures_util::{Stream, StreamExt, stream};
use registrar_application::DispatchSignal;
use tokio_postgres::{AsyncMessage, Notification};

use crate::PgStore;

/// The notification channel the outbox trigger uses.
const CHANNEL: &str = "registrar_outbox";

/// Wait before listening again after the connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

impl PgStore {
    /// Pokes `signal` whenever another replica (another store) queues mail, and once after
    /// every (re)connection, since notifications sent while disconnected are lost. Mail queued
    /// through this store is left out: the use case that queued it has poked the dispatcher
    /// already, and a second poke would only cost it a claim that finds nothing. Runs until the
    /// future is dropped, reconnecting when the connection fails.
    pub async fn forward_mail_notifications(&self, signal: DispatchSignal) {
        loop {
            match self.forward(&signal).await {
                Ok(()) => tracing::warn!("mail notifications: the database closed the connection"),
                Err(error) => tracing::warn!(%error, "mail notifications: connection failed"),
            }
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }

    /// [`Self::forward_mail_notifications`] on one connection, until it ends.
    async fn forward(&self, signal: &DispatchSignal) -> Result<(), tokio_postgres::Error> {
        let mut notifications = pin!(self.mail_queued_elsewhere().await?);
        tracing::debug!("listening for mail notifications");
        signal.notify();
        while let Some(notification) = notifications.next().await {
            notification?;
            signal.notify();
        }
        Ok(())
    }

    /// Listens for queued mail on a connection of its own (outside the pool, with the pool's
    /// configuration and TLS), and yields the notifications of mail that other stores queue,
    /// in the order their transactions committed, from the moment this returns. The stream
    /// ends, or yields its error, when the connection does.
    ///
    /// # Errors
    /// When the connection cannot be opened or `LISTEN` fails.
    pub async fn mail_queued_elsewhere(
        &self,
    ) -> Result<
        impl Stream<Item = Result<Notification, tokio_postgres::Error>>,
        tokio_postgres::Error,
    > {
        let (client, mut connection) = self.config().connect(self.tls().clone()).await?;
        // The connection makes progress only while it is polled, so it is driven alongside LISTEN.
        let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
        let statement = format!("LISTEN {CHANNEL}");
        {
            let mut listen = pin!(client.batch_execute(&statement));
            loop {
                tokio::select! {
                    listened = &mut listen => {
                        listened?;
                        break;
                    }
                    message = messages.next() => match message {
                        Some(Ok(_)) => {}
                        Some(Err(error)) => return Err(error),
                        // Closed before LISTEN was answered: nothing will be heard.
                        None => return Ok(stream::empty().left_stream()),
                    },
                }
            }
        }
        let replica = self.replica().to_owned();
        Ok(messages
            .filter_map(move |message| {
                // The connection lives as long as its client: the stream keeps it.
                let _client = &client;
                let elsewhere = match message {
                    Ok(AsyncMessage::Notification(notification)) => {
                        (notification.payload() != replica).then_some(Ok(notification))
                    }
                    Ok(_) => None,
                    Err(error) => Some(Err(error)),
                };
                std::future::ready(elsewhere)
            })
            .right_stream())
    }
}
