//! Where pooled connections live. A connection's socket belongs to the runtime that opened it,
//! and its I/O task runs there; deadpool would open it on whichever runtime first needed it,
//! often an HTTP worker's, whose shutdown would then cut the connection under the dispatcher as
//! it records the last sends. Connections are opened and run on the runtime that built the
//! store instead: in the service, the main one, which outlives the workers.

use deadpool_postgres::Connect;
use futures_util::future::BoxFuture;
use tokio::{runtime::Handle, task::JoinHandle};
use tokio_postgres::{Client, Config, Error};

use crate::tls::Tls;

/// Opens connections on one runtime, whatever runtime asks for them, with the store's TLS.
pub(crate) struct OnRuntime {
    pub(crate) runtime: Handle,
    pub(crate) tls: Tls,
}

impl Connect for OnRuntime {
    fn connect(&self, config: &Config) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), Error>> {
        let config = config.clone();
        let runtime = self.runtime.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            match runtime.spawn(open(config.clone(), tls.clone())).await {
                Ok(opened) => opened,
                // That runtime is shutting down: open one here, as deadpool itself would.
                Err(_) => open(config, tls).await,
            }
        })
    }
}

/// Opens a connection and runs its I/O task on the current runtime.
async fn open(config: Config, tls: Tls) -> Result<(Client, JoinHandle<()>), Error> {
    let (client, connection) = config.connect(tls).await?;
    let task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "database connection ended");
        }
    });
    Ok((client, task))
}
