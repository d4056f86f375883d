//! Applying the schema: refinery runs the SQL files of the top-level `migrations/` folder,
//! embedded at build time, under a session advisory lock so that replicas starting at the same
//! moment take turns instead of racing to create the same tables.

use std::time::Duration;

use crate::{SetupError, sql::MIGRATION_LOCK, tls::Tls};

mod embedded {
    //! The migrations, embedded by refinery's macro (`build.rs` rebuilds when one is added).
    refinery::embed_migrations!("../../migrations");
}

/// Connects with `config` and the store's `tls` (bounded by `connect_timeout`), takes the
/// migration lock, applies what is missing in one transaction, and closes the connection
/// (which releases the lock in any case).
pub(crate) async fn run(
    config: &tokio_postgres::Config,
    tls: Tls,
    connect_timeout: Duration,
) -> Result<(), SetupError> {
    let connect = tokio::time::timeout(connect_timeout, config.connect(tls));
    let (mut client, connection) = match connect.await {
        Ok(Ok(connected)) => connected,
        Ok(Err(error)) => return Err(SetupError::Connect(Box::new(error))),
        Err(elapsed) => return Err(SetupError::Connect(Box::new(elapsed))),
    };
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "the migration connection failed");
        }
    });
    let result = migrate(&mut client).await;
    // Dropping the client ends the session, and with it the advisory lock.
    drop(client);
    if driver.await.is_err() {
        tracing::warn!("the migration connection's task did not finish cleanly");
    }
    result
}

async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), SetupError> {
    let connect_error = |error: tokio_postgres::Error| SetupError::Connect(Box::new(error));
    // A migration may take longer than a request may, and waiting for another replica's
    // migration is expected: no timeouts on this session.
    client
        .batch_execute(&format!(
            "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
             SELECT pg_advisory_lock({MIGRATION_LOCK})"
        ))
        .await
        .map_err(connect_error)?;
    let report = embedded::migrations::runner()
        .set_grouped(true)
        .run_async(client)
        .await
        .map_err(|error| SetupError::Migration(Box::new(error)));
    if let Ok(report) = &report {
        for migration in report.applied_migrations() {
            tracing::info!(migration = %migration, "applied database migration");
        }
    }
    let unlocked = client
        .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .await
        .map_err(connect_error);
    report?;
    unlocked
}
