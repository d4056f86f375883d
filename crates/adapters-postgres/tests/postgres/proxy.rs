//! A TCP proxy in front of PostgreSQL that a test can break on purpose: cut (every connection
//! dropped, new ones refused), stall (connections accepted and held, nothing forwarded: a
//! network black hole), and forward again on the same port.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Stall,
    Cut,
}

/// The proxy; stops when dropped.
#[derive(Debug)]
pub(crate) struct Proxy {
    port: u16,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// Connections forwarding right now.
    forwarding: Arc<AtomicUsize>,
}

impl Proxy {
    /// A proxy on a free local port, forwarding to `target`.
    pub(crate) async fn start(target: SocketAddr) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, _) = watch::channel(Mode::Forward);
        let proxy = Arc::new(Self {
            port,
            target,
            mode,
            listener: Mutex::new(None),
            forwarding: Arc::new(AtomicUsize::new(0)),
        });
        proxy.listen(listener);
        proxy
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Drops every connection and stops listening: new connections are refused.
    pub(crate) async fn cut(&self) {
        self.stop_listening();
        self.mode.send_replace(Mode::Cut);
        self.until_nothing_forwards().await;
    }

    /// Keeps every connection open and accepts new ones, but forwards nothing.
    pub(crate) async fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
        self.until_nothing_forwards().await;
        self.ensure_listening().await;
    }

    /// Waits until every relay has seen the new mode, so nothing slips through after it.
    async fn until_nothing_forwards(&self) {
        let started = Instant::now();
        while self.forwarding.load(Ordering::SeqCst) > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "relays did not stop"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn stop_listening(&self) {
        if let Some(listener) = self.listener.lock().unwrap().take() {
            listener.abort();
        }
    }

    /// Forwards again, on the same port; connections held while stalled are closed.
    pub(crate) async fn forward(&self) {
        self.mode.send_replace(Mode::Forward);
        self.ensure_listening().await;
    }

    async fn ensure_listening(&self) {
        if self.listener.lock().unwrap().is_some() {
            return;
        }
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.listen(listener);
    }

    fn listen(&self, listener: TcpListener) {
        let target = self.target;
        let mode = self.mode.subscribe();
        let forwarding = Arc::clone(&self.forwarding);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(
                    inbound,
                    target,
                    mode.clone(),
                    Arc::clone(&forwarding),
                ));
            }
        });
        *self.listener.lock().unwrap() = Some(task);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop_listening();
        self.mode.send_replace(Mode::Cut);
    }
}

/// Counts a relay as forwarding while it lives.
struct Forwarding(Arc<AtomicUsize>);

impl Forwarding {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one connection according to the mode: forwards it until the mode changes, or holds
/// it silent while stalled; any change of mode then closes it.
async fn relay(
    mut inbound: TcpStream,
    target: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    forwarding: Arc<AtomicUsize>,
) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Cut => return,
        Mode::Stall => {
            let _ = mode.changed().await;
            return;
        }
        Mode::Forward => {}
    }
    let forwarding = Forwarding::start(&forwarding);
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = mode.changed() => {
            drop(forwarding);
            if *mode.borrow() == Mode::Stall {
                // The server's side goes; the client's stays open and silent: a black hole.
                drop(outbound);
                let _ = mode.wait_for(|m| *m != Mode::Stall).await;
            }
        }
    }
}
