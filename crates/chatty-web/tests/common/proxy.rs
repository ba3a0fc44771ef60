//! A TCP proxy on loopback that a test can freeze or cut, to make a real
//! MariaDB or Redis "stop answering" for one node without touching the
//! server that other tests share.
//!
//! * `freeze()`: connections stay open but no byte is forwarded (a hung
//!   server, a dead network path without RST);
//! * `cut()`: every current connection is closed (a restart);
//! * `thaw()`: forwarding resumes and new connections work again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug)]
pub struct FaultProxy {
    pub port: u16,
    frozen: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    connections: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Proxies `127.0.0.1:<port>` to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("address").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let connections = Arc::new(AtomicU64::new(0));
        let proxy = Self {
            port,
            frozen: Arc::clone(&frozen),
            generation: generation.clone(),
            connections: Arc::clone(&connections),
        };
        let target = target.to_owned();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let frozen = Arc::clone(&frozen);
                let cut = generation.subscribe();
                let target = target.clone();
                connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    // A frozen proxy accepts but does not connect onwards.
                    while frozen.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = pipe(client_read, server_write, Arc::clone(&frozen)) => {}
                        _ = pipe(server_read, client_write, Arc::clone(&frozen)) => {}
                        _ = wait_cut(cut) => {}
                    }
                });
            }
        });
        proxy
    }

    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::Relaxed);
    }

    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::Relaxed);
    }

    /// Closes every connection made so far.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

async fn wait_cut(mut cut: watch::Receiver<u64>) {
    let _ = cut.changed().await;
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Hold the bytes while frozen: the peer sees a server that stopped answering.
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
