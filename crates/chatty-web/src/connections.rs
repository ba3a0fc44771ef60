//! Limits on long-lived connections (WebSocket, SSE, long-poll): how many
//! this node holds and how many one client address may hold.
//!
//! A connection takes a [`ConnectionGuard`] before it is accepted (so a
//! refused one never reaches a room) and gives it back when it ends,
//! whichever way it ends: the guard's `Drop` does it. The counts are also
//! the `chatty_push_connections{transport}` gauge.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chatty_protocol::ErrorCode;
use prometheus::{IntCounterVec, IntGaugeVec};

use crate::error::ApiError;

/// A long-lived transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
    LongPoll,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
            Transport::LongPoll => "long_poll",
        }
    }
}

/// Why a push connection ended (the `reason` label of
/// `chatty_push_disconnects_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The client closed it.
    Client,
    /// Its queue overflowed: it was not reading fast enough.
    SlowConsumer,
    /// The node is draining.
    Draining,
    /// Its cursor could not be resumed (`reset` sent).
    Reset,
    /// Sent nothing, not even a pong, for `push.idle_timeout_secs`.
    IdleTimeout,
    /// Sent a frame larger than `push.max_frame_bytes`.
    FrameTooLarge,
    /// Broke the WebSocket protocol.
    ProtocolError,
    /// Its first-message authentication failed or did not come in time.
    AuthFailed,
    /// Its site's origins or enabled state changed: it reconnects and meets
    /// the new rules.
    SiteChanged,
}

impl Disconnect {
    pub fn as_str(self) -> &'static str {
        match self {
            Disconnect::Client => "client",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::Draining => "draining",
            Disconnect::Reset => "reset",
            Disconnect::IdleTimeout => "idle_timeout",
            Disconnect::FrameTooLarge => "frame_too_large",
            Disconnect::ProtocolError => "protocol_error",
            Disconnect::AuthFailed => "auth_failed",
            Disconnect::SiteChanged => "site_changed",
        }
    }
}

/// The node's connection counts and caps.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    gauge: IntGaugeVec,
    disconnects: IntCounterVec,
}

impl ConnectionLimits {
    pub fn new(
        max_total: usize,
        max_per_ip: usize,
        gauge: IntGaugeVec,
        disconnects: IntCounterVec,
    ) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            gauge,
            disconnects,
        })
    }

    /// Connections held now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Takes a slot for a connection from `ip`, or refuses: 503 `node_full`
    /// (another node may have room) or 429 `too_many_connections`.
    pub fn acquire(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        transport: Transport,
    ) -> Result<ConnectionGuard, ApiError> {
        let ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::client(
                ErrorCode::NodeFull,
                "This node holds as many connections as it may: retry, or use another node.",
            ));
        }
        {
            let mut per_ip = self
                .per_ip
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(ApiError::client(
                    ErrorCode::TooManyConnections,
                    "Too many open connections from this address.",
                ));
            }
            *count += 1;
        }
        self.gauge.with_label_values(&[transport.as_str()]).inc();
        Ok(ConnectionGuard {
            limits: Arc::clone(self),
            ip,
            transport,
        })
    }
}

/// A held connection slot; released on drop.
#[derive(Debug)]
pub struct ConnectionGuard {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
    transport: Transport,
}

impl ConnectionGuard {
    /// Counts how the connection ended.
    pub fn record_end(&self, reason: Disconnect) {
        self.limits
            .disconnects
            .with_label_values(&[self.transport.as_str(), reason.as_str()])
            .inc();
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let limits = &self.limits;
        limits.total.fetch_sub(1, Ordering::AcqRel);
        let mut per_ip = limits
            .per_ip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        drop(per_ip);
        limits
            .gauge
            .with_label_values(&[self.transport.as_str()])
            .dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn limits(total: usize, per_ip: usize) -> Arc<ConnectionLimits> {
        ConnectionLimits::new(
            total,
            per_ip,
            IntGaugeVec::new(Opts::new("g", "g"), &["transport"]).expect("gauge"),
            IntCounterVec::new(Opts::new("d", "d"), &["transport", "reason"]).expect("counter"),
        )
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
    }

    #[test]
    fn caps_per_address_and_per_node_and_releases_on_drop() {
        let limits = limits(3, 2);
        let a1 = limits.acquire(ip(1), Transport::WebSocket).expect("first");
        let _a2 = limits.acquire(ip(1), Transport::Sse).expect("second");
        let refused = limits
            .acquire(ip(1), Transport::WebSocket)
            .expect_err("third from one ip");
        assert_eq!(refused.code(), ErrorCode::TooManyConnections);
        let _b1 = limits
            .acquire(ip(2), Transport::LongPoll)
            .expect("other ip");
        let full = limits
            .acquire(ip(3), Transport::WebSocket)
            .expect_err("node full");
        assert_eq!(full.code(), ErrorCode::NodeFull);
        assert_eq!(limits.total(), 3);
        drop(a1);
        assert_eq!(limits.total(), 2);
        let _a3 = limits
            .acquire(ip(1), Transport::WebSocket)
            .expect("slot given back");
        assert_eq!(
            limits.gauge.with_label_values(&["websocket"]).get(),
            1,
            "the gauge follows the guards"
        );
    }
}
