//! Test clients for the push transports: a WebSocket client
//! (tokio-tungstenite) and a Server-Sent Events client (reqwest stream), both
//! yielding the same `PollResponse` batches the poll returns.

use std::time::Duration;

use chatty_protocol::api::{JoinResponse, PollResponse};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for one frame before calling it missing.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

/// The `ws://` URL of a room's WebSocket endpoint on a node at `http_base`.
pub fn ws_url(http_base: &str, guest: &JoinResponse, cursor: &str) -> String {
    format!(
        "{}/api/v1/rooms/{}/ws?token={}&cursor={}",
        http_base.replacen("http://", "ws://", 1),
        guest.room.id,
        guest.token,
        cursor
    )
}

/// The `ws://` URL of a room's WebSocket endpoint without credentials (the
/// client authenticates in its first message).
pub fn ws_url_bare(http_base: &str, room_id: i64) -> String {
    format!(
        "{}/api/v1/rooms/{room_id}/ws",
        http_base.replacen("http://", "ws://", 1)
    )
}

/// The first message of a client that authenticates in-band.
pub fn auth_message(token: &str, cursor: &str) -> String {
    serde_json::json!({"type": "auth", "token": token, "cursor": cursor}).to_string()
}

/// What a WebSocket client got next.
#[derive(Debug)]
pub enum WsEvent {
    Batch(PollResponse),
    Closed(Option<CloseFrame>),
}

#[derive(Debug)]
pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Connects, optionally with an `Origin` header; the handshake's HTTP
    /// error (status and body) when it is refused.
    pub async fn connect(url: &str, origin: Option<&str>) -> Result<Self, (u16, String)> {
        let mut request = url.into_client_request().expect("valid ws url");
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", HeaderValue::from_str(origin).expect("origin"));
        }
        match tokio::time::timeout(FRAME_WAIT, tokio_tungstenite::connect_async(request)).await {
            Ok(Ok((stream, _))) => Ok(Self { stream }),
            Ok(Err(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((status, body))
            }
            Ok(Err(e)) => panic!("websocket connect failed: {e}"),
            Err(_) => panic!("websocket connect timed out"),
        }
    }

    /// Connects over a socket with a tiny receive buffer (a client that will
    /// stop reading).
    pub async fn connect_small_buffer(url: &str, port: u16) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        let tcp = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("tcp connect");
        let request = url.into_client_request().expect("valid ws url");
        let (stream, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
            .await
            .expect("handshake");
        Self { stream }
    }

    /// The next batch or close (pings are answered by tungstenite itself).
    pub async fn next_event(&mut self) -> WsEvent {
        loop {
            let item = tokio::time::timeout(FRAME_WAIT, self.stream.next())
                .await
                .expect("a frame within the wait");
            match item {
                Some(Ok(Message::Text(text))) => {
                    let batch: PollResponse = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("frame {text:?}: {e}"));
                    return WsEvent::Batch(batch);
                }
                Some(Ok(Message::Close(frame))) => return WsEvent::Closed(frame),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return WsEvent::Closed(None),
            }
        }
    }

    /// The next batch; panics on a close.
    pub async fn next_batch(&mut self) -> PollResponse {
        match self.next_event().await {
            WsEvent::Batch(batch) => batch,
            WsEvent::Closed(frame) => panic!("closed: {frame:?}"),
        }
    }

    pub async fn send_text(&mut self, text: String) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("sent");
    }
}

/// One SSE record.
#[derive(Debug, Default, Clone)]
pub struct SseRecord {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug)]
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
    pub comments: usize,
}

impl SseClient {
    /// Opens the stream; the HTTP error (status, body) when refused.
    pub async fn connect(
        http_base: &str,
        guest: &JoinResponse,
        cursor: &str,
        last_event_id: Option<&str>,
    ) -> Result<Self, (u16, String)> {
        let client = reqwest::Client::new();
        let mut request = client
            .get(format!("{http_base}/api/v1/rooms/{}/sse", guest.room.id))
            .query(&[("token", guest.token.as_str()), ("cursor", cursor)]);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = tokio::time::timeout(FRAME_WAIT, request.send())
            .await
            .expect("sse answered in time")
            .expect("sse request");
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err((status, response.text().await.unwrap_or_default()));
        }
        assert!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"))
        );
        Ok(Self {
            response,
            buffer: String::new(),
            comments: 0,
        })
    }

    /// The next record with data, or `None` when the stream ended.
    pub async fn next_record(&mut self) -> Option<SseRecord> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                let mut record = SseRecord::default();
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        record.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        record.event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        record.data.push_str(v);
                    }
                }
                if !record.data.is_empty() {
                    return Some(record);
                }
            }
            let chunk = tokio::time::timeout(FRAME_WAIT, self.response.chunk())
                .await
                .expect("an SSE chunk within the wait");
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Reads for `duration` and returns how many comment lines (keep-alives)
    /// arrived; data records read meanwhile are dropped.
    pub async fn comments_within(&mut self, duration: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => {
                    let text = String::from_utf8_lossy(&bytes);
                    self.comments += text.lines().filter(|l| l.starts_with(':')).count();
                }
                Ok(Ok(None) | Err(_)) | Err(_) => return self.comments,
            }
        }
    }

    /// The next batch of events; panics on anything else.
    pub async fn next_batch(&mut self) -> PollResponse {
        let record = self.next_record().await.expect("a record");
        assert_eq!(record.event, None, "a batch, not {record:?}");
        let batch: PollResponse = serde_json::from_str(&record.data).expect("batch json");
        let reset = batch
            .events
            .iter()
            .any(|e| matches!(e, chatty_protocol::Event::Reset { .. }));
        if reset {
            assert_eq!(record.id, None, "a reset is not a position to resume from");
        } else {
            assert_eq!(
                record.id.as_deref(),
                Some(batch.cursor.to_string().as_str()),
                "the record id is the cursor"
            );
        }
        batch
    }
}
