//! One Server-Sent Events connection, as a streaming response body.
//!
//! Like [`crate::websocket`], the body is the connection: no task of its
//! own. It writes `retry:` once, the catch-up frames, then live frames,
//! each an SSE record whose `id:` is the room cursor after it, so a
//! browser's `EventSource` that reconnects sends `Last-Event-ID` and
//! resumes exactly there, on any node. A comment line every
//! `push.sse_keepalive_secs` keeps proxies from timing the stream out.
//!
//! When the server ends the stream it first sends a named `close` event,
//! `{"reason":"draining"|"slow_consumer"|"reset"}`; an `EventSource` then
//! reconnects by itself with `Last-Event-ID` (after `reset` a client
//! closes it and joins again; the reset record has no `id:`, so one that
//! does not close it is not moved past what it missed).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Interval, MissedTickBehavior};

use crate::connections::{ConnectionGuard, Disconnect};
use crate::hub::{Hub, Subscription};

/// How long a browser waits before reconnecting (the `retry:` field).
const RETRY: &[u8] = b"retry: 2000\n\n";
const KEEPALIVE: &[u8] = b": keep-alive\n\n";

/// An SSE connection: a stream of bytes for actix to write.
#[derive(Debug)]
pub struct SseConnection {
    subscription: Subscription,
    keepalive: Interval,
    hub: Arc<Hub>,
    started: bool,
    finished: bool,
    guard: ConnectionGuard,
}

impl SseConnection {
    pub fn new(
        subscription: Subscription,
        hub: Arc<Hub>,
        keepalive: Duration,
        guard: ConnectionGuard,
    ) -> Self {
        let start = tokio::time::Instant::now() + keepalive;
        let mut keepalive = tokio::time::interval_at(start, keepalive);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            subscription,
            keepalive,
            hub,
            started: false,
            finished: false,
            guard,
        }
    }

    fn end(&mut self, reason: Disconnect) -> Poll<Option<Result<Bytes, actix_web::Error>>> {
        self.finished = true;
        self.guard.record_end(reason);
        let record = format!(
            "event: close\ndata: {{\"reason\":\"{}\"}}\n\n",
            reason.as_str()
        );
        Poll::Ready(Some(Ok(Bytes::from(record))))
    }
}

impl Stream for SseConnection {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        if !this.started {
            this.started = true;
            return Poll::Ready(Some(Ok(Bytes::from_static(RETRY))));
        }
        if let Some(frame) = this.subscription.catch_up.pop_front() {
            return Poll::Ready(Some(Ok(frame.sse())));
        }
        let Some(queue) = this.subscription.queue.as_mut() else {
            return this.end(Disconnect::Reset);
        };
        match queue.poll_recv(cx) {
            Poll::Ready(Some(frame)) => return Poll::Ready(Some(Ok(frame.sse()))),
            Poll::Ready(None) => {
                return if this.hub.is_draining() {
                    this.end(Disconnect::Draining)
                } else if this.subscription.site_changed() {
                    this.end(Disconnect::SiteChanged)
                } else {
                    this.end(Disconnect::SlowConsumer)
                };
            }
            Poll::Pending => {}
        }
        if this.keepalive.poll_tick(cx).is_ready() {
            return Poll::Ready(Some(Ok(Bytes::from_static(KEEPALIVE))));
        }
        Poll::Pending
    }
}

impl Drop for SseConnection {
    fn drop(&mut self) {
        if !self.finished {
            // actix dropped the body: the client went away.
            self.guard.record_end(Disconnect::Client);
        }
    }
}
