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
//! ## How it ends (close code, reason)
//!
//! * the room let go of it because its queue was full: `1008 slow_consumer`;
//! * the node is draining: `1012 draining` (reconnect, to another node);
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
use crate::fanout::encode_ws;
use crate::hub::{Hub, Subscription};

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
    subscription: Subscription,
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
            .field("subscription", &self.subscription)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

impl WsConnection {
    pub fn new(
        inbound: Payload,
        subscription: Subscription,
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
            subscription,
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
        if self.closing {
            return;
        }
        self.closing = true;
        self.guard.record_end(reason);
        self.control
            .push_back(encode_ws(Message::Close(Some(CloseReason {
                code,
                description: Some(reason.as_str().to_owned()),
            }))));
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
                        // Pongs, and any data frame: signs of life only.
                        Frame::Pong(_)
                        | Frame::Text(_)
                        | Frame::Binary(_)
                        | Frame::Continuation(_) => {}
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
        if let Some(frame) = this.subscription.catch_up.pop_front() {
            return Poll::Ready(Some(Ok(frame.websocket())));
        }
        let Some(queue) = this.subscription.queue.as_mut() else {
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
