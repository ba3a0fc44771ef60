//! One WebSocket connection, as the body of the `101 Switching Protocols`
//! response.
//!
//! There is no task and no channel per connection besides the room's
//! queue: the response body *is* the connection. actix polls it whenever
//! the socket can take more bytes, and each poll also reads what the client
//! sent (the request payload of an upgraded request is the client's
//! frames). So an idle connection costs this struct, its queue and actix's
//! buffers — which is what lets one node hold tens of thousands.
//!
//! What the server sends, in order: control replies (pong, close), then
//! the catch-up frames of its [`Subscription`], then live frames from the
//! room's queue, with a ping every `push.ping_interval_secs`. Clients send
//! nothing but pongs (browsers answer pings by themselves) and a close; any
//! other frame is read, counted as a sign of life and ignored, so sends
//! stay on `POST …/messages` where they are acknowledged.
//!
//! ## Authenticating in the first message
//!
//! A browser cannot put a header on a WebSocket, and a token in the URL
//! ends up in access logs. So a client may open the socket without one and
//! send `{"type":"auth","token":"…","cursor":"…"}` as its first frame,
//! within `push.handshake_timeout_ms`. Until then the connection is in
//! [`Phase::AwaitingAuth`]; the token check and the subscription run as one
//! future polled by this same body ([`Phase::Subscribing`]), and a refusal
//! closes with `1008` and the error code as the reason (`invalid_token`,
//! `auth_timeout`, …).
//!
//! ## How it ends (close code, reason)
//!
//! * the room let go of it because its queue was full: `1008 slow_consumer`;
//! * the node is draining: `1012 draining` (reconnect, to another node);
//! * its site's origins or enabled state changed: `1012 site_changed`
//!   (reconnect: the handshake applies the new rules);
//! * its cursor could not be resumed: the `reset` event, then `1000 reset`;
//! * a client frame over `push.max_frame_bytes`: `1009 frame_too_large`;
//! * no frame at all from the client for `push.idle_timeout_secs`:
//!   `1001 idle_timeout`;
//! * a protocol violation: `1002 protocol_error`;
//! * the client's close: echoed.
//!
//! The server closes the TCP connection right after its close frame.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Message, ProtocolError};
use actix_web::web::Payload;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::codec::Decoder;

use crate::connections::{ConnectionGuard, Disconnect};
use crate::error::ApiError;
use crate::fanout::encode_ws;
use crate::hub::{Hub, Subscription};

/// Checks a first-message token and cursor and subscribes (built by the
/// route, which knows the room and the node's state).
pub type Authorize = Box<dyn FnOnce(String, String) -> SubscribeFuture>;

/// The subscription in progress.
pub type SubscribeFuture = Pin<Box<dyn Future<Output = Result<Subscription, ApiError>>>>;

/// Where a connection is in its life.
pub enum Phase {
    /// Upgraded without credentials: the first frame must bring them
    /// before `deadline`.
    AwaitingAuth {
        deadline: Pin<Box<tokio::time::Sleep>>,
        authorize: Authorize,
    },
    /// Checking the token and subscribing.
    Subscribing(SubscribeFuture),
    /// Sending catch-up and live frames.
    Live(Subscription),
}

impl std::fmt::Debug for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::AwaitingAuth { .. } => "AwaitingAuth",
            Phase::Subscribing(_) => "Subscribing",
            Phase::Live(_) => "Live",
        })
    }
}

/// The first frame of a connection that authenticates in-band.
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum FirstMessage {
    Auth { token: String, cursor: String },
}

/// An empty ping: FIN + opcode 9, unmasked, no payload.
const PING: &[u8] = &[0x89, 0x00];

/// Timing and size limits of a WebSocket connection.
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    pub max_frame_bytes: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
}

/// A WebSocket connection: a stream of bytes for actix to write.
pub struct WsConnection {
    inbound: Payload,
    read_buf: BytesMut,
    codec: Codec,
    phase: Phase,
    /// Pongs and the close frame, sent before anything else.
    control: VecDeque<Bytes>,
    ping: Interval,
    last_heard: Instant,
    idle_timeout: Duration,
    hub: Arc<Hub>,
    /// The close frame is queued: send what is queued, then end.
    closing: bool,
    finished: bool,
    guard: ConnectionGuard,
}

impl std::fmt::Debug for WsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConnection")
            .field("phase", &self.phase)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

impl WsConnection {
    pub fn new(
        inbound: Payload,
        phase: Phase,
        hub: Arc<Hub>,
        limits: WsLimits,
        guard: ConnectionGuard,
    ) -> Self {
        let start = tokio::time::Instant::now() + limits.ping_interval;
        let mut ping = tokio::time::interval_at(start, limits.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            inbound,
            read_buf: BytesMut::new(),
            codec: Codec::new().max_size(limits.max_frame_bytes),
            phase,
            control: VecDeque::new(),
            ping,
            last_heard: Instant::now(),
            idle_timeout: limits.idle_timeout,
            hub,
            closing: false,
            finished: false,
            guard,
        }
    }

    /// Queues the close frame; the connection ends once it is written.
    fn close(&mut self, code: CloseCode, reason: Disconnect) {
        self.close_saying(code, reason, reason.as_str());
    }

    /// Like [`WsConnection::close`], with another text as the reason.
    fn close_saying(&mut self, code: CloseCode, reason: Disconnect, text: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.guard.record_end(reason);
        self.control
            .push_back(encode_ws(Message::Close(Some(CloseReason {
                code,
                description: Some(text.to_owned()),
            }))));
    }

    /// The first frame of an in-band authentication: starts the check.
    fn first_message(&mut self, text: &[u8]) {
        let Phase::AwaitingAuth { .. } = self.phase else {
            return; // later data frames are only signs of life
        };
        match serde_json::from_slice::<FirstMessage>(text) {
            Ok(FirstMessage::Auth { token, cursor }) => {
                let placeholder = Phase::Subscribing(Box::pin(std::future::pending()));
                if let Phase::AwaitingAuth { authorize, .. } =
                    std::mem::replace(&mut self.phase, placeholder)
                {
                    self.phase = Phase::Subscribing(authorize(token, cursor));
                }
            }
            Err(_) => self.close_saying(
                CloseCode::Policy,
                Disconnect::AuthFailed,
                chatty_protocol::ErrorCode::MalformedJson.as_str(),
            ),
        }
    }

    /// Advances authentication; `true` once the connection is live.
    fn poll_auth(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.phase {
            Phase::Live(_) => true,
            Phase::AwaitingAuth { deadline, .. } => {
                if deadline.as_mut().poll(cx).is_ready() {
                    self.close_saying(CloseCode::Policy, Disconnect::AuthFailed, "auth_timeout");
                }
                false
            }
            Phase::Subscribing(subscribing) => match subscribing.as_mut().poll(cx) {
                Poll::Ready(Ok(subscription)) => {
                    self.phase = Phase::Live(subscription);
                    true
                }
                Poll::Ready(Err(error)) => {
                    let code = error.code();
                    self.close_saying(CloseCode::Policy, Disconnect::AuthFailed, code.as_str());
                    false
                }
                Poll::Pending => false,
            },
        }
    }

    /// Reads and handles what the client sent. Returns `false` when the
    /// client is gone (its side of the connection ended).
    fn read_client(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            match Pin::new(&mut self.inbound).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    self.read_buf.extend_from_slice(&bytes);
                    // Decode as bytes arrive, so an oversize frame is
                    // refused from its header, not after buffering it.
                    self.decode_frames();
                    if self.closing {
                        return true;
                    }
                }
                Poll::Ready(Some(Err(_)) | None) => return false,
                Poll::Pending => return true,
            }
        }
    }

    fn decode_frames(&mut self) {
        loop {
            match self.codec.decode(&mut self.read_buf) {
                Ok(Some(frame)) => {
                    self.last_heard = Instant::now();
                    match frame {
                        Frame::Ping(payload) => {
                            self.control.push_back(encode_ws(Message::Pong(payload)));
                        }
                        Frame::Close(reason) => {
                            // Echo the client's code, as RFC 6455 asks.
                            self.closing = true;
                            self.guard.record_end(Disconnect::Client);
                            self.control
                                .push_back(encode_ws(Message::Close(reason.map(|r| {
                                    CloseReason {
                                        code: r.code,
                                        description: None,
                                    }
                                }))));
                            return;
                        }
                        Frame::Text(text) => self.first_message(&text),
                        // Pongs, and any other data frame: signs of life only.
                        Frame::Pong(_) | Frame::Binary(_) | Frame::Continuation(_) => {}
                    }
                }
                Ok(None) => return,
                Err(ProtocolError::Overflow) => {
                    self.read_buf.clear();
                    self.close(CloseCode::Size, Disconnect::FrameTooLarge);
                    return;
                }
                Err(_) => {
                    self.read_buf.clear();
                    self.close(CloseCode::Protocol, Disconnect::ProtocolError);
                    return;
                }
            }
        }
    }
}

impl Drop for WsConnection {
    fn drop(&mut self) {
        if !self.finished && !self.closing {
            // actix dropped the body: the connection broke.
            self.guard.record_end(Disconnect::Client);
        }
    }
}

impl Stream for WsConnection {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        if !this.closing && !this.read_client(cx) {
            // The client went away without a close frame.
            this.guard.record_end(Disconnect::Client);
            this.finished = true;
            return Poll::Ready(None);
        }
        if let Some(control) = this.control.pop_front() {
            return Poll::Ready(Some(Ok(control)));
        }
        if this.closing {
            this.finished = true;
            return Poll::Ready(None);
        }
        // Before the frames: under steady traffic the ping must still go
        // out (and the idle check still run), or a client would look idle
        // the moment traffic paused.
        if this.ping.poll_tick(cx).is_ready() {
            if this.last_heard.elapsed() > this.idle_timeout {
                this.close(CloseCode::Away, Disconnect::IdleTimeout);
                return Poll::Ready(this.control.pop_front().map(Ok));
            }
            return Poll::Ready(Some(Ok(Bytes::from_static(PING))));
        }
        if !this.poll_auth(cx) {
            return match this.control.pop_front() {
                Some(close) => Poll::Ready(Some(Ok(close))),
                None => Poll::Pending,
            };
        }
        let Phase::Live(subscription) = &mut this.phase else {
            return Poll::Pending;
        };
        if let Some(frame) = subscription.catch_up.pop_front() {
            return Poll::Ready(Some(Ok(frame.websocket())));
        }
        let site_changed = subscription.site_changed();
        let Some(queue) = subscription.queue.as_mut() else {
            // The catch-up ended in a reset: the client joins again.
            this.close(CloseCode::Normal, Disconnect::Reset);
            return Poll::Ready(this.control.pop_front().map(Ok));
        };
        match queue.poll_recv(cx) {
            Poll::Ready(Some(frame)) => return Poll::Ready(Some(Ok(frame.websocket()))),
            Poll::Ready(None) => {
                // The room let go of this connection.
                if this.hub.is_draining() {
                    this.close(CloseCode::Restart, Disconnect::Draining);
                } else if site_changed {
                    this.close_saying(CloseCode::Restart, Disconnect::SiteChanged, "site_changed");
                } else {
                    this.close(CloseCode::Policy, Disconnect::SlowConsumer);
                }
                return Poll::Ready(this.control.pop_front().map(Ok));
            }
            Poll::Pending => {}
        }
        Poll::Pending
    }
}
