//! The hostile-input corpus: what every node does with input an attacker
//! (or a broken client) sends, while well-behaved guests keep chatting.
//!
//! [`cases`] is a table of hostile requests — XSS strings, SQL
//! metacharacters, bidi and zero-width characters, combining-mark floods,
//! control characters, 1 MB and chunked bodies, invalid UTF-8, deeply nested
//! and malformed JSON, wrong content types, forged, expired, truncated and
//! tampered guest tokens, tokens of another room or another site, admin
//! tokens that are forged, too weak or of another site, foreign origins,
//! reserved and look-alike nicknames, too many links, filtered words, long
//! cursors and headers, odd paths and methods. Each row names the request
//! and **the documented outcome** of it, which is one of:
//!
//! * refused: the status and the stable error code, in a
//!   `{"error":{"code":…,"message":…}}` body, never a 5xx;
//! * stored: the exact text stored and served back, checked on every node.
//!   HTML and SQL in a message or a nickname are data: stored byte for byte,
//!   never escaped, stripped or interpreted (the widget renders text with
//!   `textContent`);
//! * joined: the exact nickname (or page) a join ends up with.
//!
//! The table is the reference for "what happens to input X";
//! docs/moderation.md points here. Each row has a one-line `why`.
//!
//! The corpus runs on three nodes of one deployment (real MariaDB and
//! Redis), case `i` on node `i % 3`, while a background guest sends a
//! message every 50 ms through every node and polls, a watcher on every node
//! polls, and a WebSocket listens. The next case starts only once the
//! background guest got another message through, so the two interleave by
//! construction, not by timing. At the end: not one of the well-behaved
//! requests failed, every message was stored once and is seen in order on
//! every node and on the WebSocket, and every node is still healthy and
//! ready.
//!
//! Not in the table: requests refused by actix-http's HTTP/1 parser before
//! any Chatty code runs (more than 96 headers or a head above 128 KiB: 431;
//! a malformed request line or header byte, both `Content-Length` and
//! `Transfer-Encoding`, two `Content-Length`s: 400). Those answers have an
//! empty body and close the connection, outside the JSON error contract.
//!
//! Run: `cargo test -p chatty-web --test cluster hostile` (needs
//! `CHATTY_TEST_MYSQL_URL` and `CHATTY_TEST_REDIS_URL`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chatty_protocol::api::{JoinResponse, PollResponse, SendResponse};
use chatty_protocol::{ErrorBody, ErrorCode, Event, MessageView, RoomCursor};
use chatty_web::token::{GuestClaims, TokenKey};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::helpers::{Deployment, TEST_SECRET, TestApp, header, spawn_node};
use crate::push_client::{WsClient, WsEvent, ws_url};

/// How far apart the background guest's messages are.
const BACKGROUND_EVERY: Duration = Duration::from_millis(50);
/// How long the test waits for the background guest's next message, and at
/// the end for the watchers and the WebSocket to catch up.
const CATCH_UP: Duration = Duration::from_secs(30);
/// `server.max_request_bytes` (the default, which the nodes keep: checked).
const MAX_REQUEST_BYTES: usize = 32 * 1024;
/// `chat.max_body_chars` (the default, which the nodes keep: checked).
const MAX_BODY_CHARS: usize = 2000;
/// One megabyte.
const MB: usize = 1024 * 1024;

// --- The table -----------------------------------------------------------------

/// A request body.
#[derive(Debug, Clone)]
enum Payload {
    None,
    /// Sent with a `Content-Length`.
    Bytes(Vec<u8>),
    /// Sent with `Transfer-Encoding: chunked` (no length up front).
    Chunked(Vec<u8>),
}

/// One raw request: method, path (with query), headers and body bytes.
#[derive(Debug, Clone)]
struct Request {
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    payload: Payload,
}

impl Request {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            headers: Vec::new(),
            payload: Payload::None,
        }
    }

    fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    fn origin(self, origin: &str) -> Self {
        self.header("origin", origin)
    }

    /// A JSON body (`application/json`).
    fn json(self, body: &Value) -> Self {
        self.raw("application/json", serde_json::to_vec(body).expect("json"))
    }

    /// Exactly these bytes, with this content type.
    fn raw(mut self, content_type: &str, bytes: Vec<u8>) -> Self {
        self = self.header("content-type", content_type);
        self.payload = Payload::Bytes(bytes);
        self
    }

    /// These bytes as `application/json`, chunked.
    fn chunked(mut self, bytes: Vec<u8>) -> Self {
        self = self.header("content-type", "application/json");
        self.payload = Payload::Chunked(bytes);
        self
    }
}

/// The documented outcome of a case.
#[derive(Debug, Clone)]
enum Expect {
    /// Refused with this status and code in a JSON error body.
    Refused(u16, ErrorCode),
    /// 201: a new message stored with exactly this body, served exactly so
    /// by a poll on every node.
    Stored(String),
    /// 200: a join whose guest has exactly this nickname.
    Joined(String),
    /// 200: a join into the page room with exactly this page.
    JoinedPage(String),
    /// This 2xx status; nothing is stored.
    Answered(u16),
}

#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    why: &'static str,
    request: Request,
    expect: Expect,
}

fn refused(
    name: &'static str,
    why: &'static str,
    request: Request,
    status: u16,
    code: ErrorCode,
) -> Case {
    Case {
        name,
        why,
        request,
        expect: Expect::Refused(status, code),
    }
}

fn accepted(name: &'static str, why: &'static str, request: Request, expect: Expect) -> Case {
    Case {
        name,
        why,
        request,
        expect,
    }
}

/// What the cases refer to: rooms, sites and the tokens of their guests.
struct Fixture {
    demo_room: i64,
    /// A guest of the demo room who sends most of the corpus.
    mallory: JoinResponse,
    /// A guest of the demo site's room for the page `/elsewhere`.
    pat: JoinResponse,
    /// Site "Other" (origin https://other.example, word filter: mask "badword").
    other_key: String,
    other_admin: String,
    other_moderator: String,
    olga: JoinResponse,
    /// Site "Strict" (origin https://strict.example, word filter: reject "spam").
    strict_key: String,
    sam: JoinResponse,
}

impl Fixture {
    fn send_path(&self) -> String {
        format!("/api/v1/rooms/{}/messages", self.demo_room)
    }

    fn events_path(&self) -> String {
        format!("/api/v1/rooms/{}/events", self.demo_room)
    }

    /// Mallory sends `body` to the demo room.
    fn send(&self, id: &str, body: &str) -> Request {
        self.send_as(&self.mallory, id, body)
    }

    fn send_as(&self, guest: &JoinResponse, id: &str, body: &str) -> Request {
        Request::post(format!("/api/v1/rooms/{}/messages", guest.room.id))
            .bearer(&guest.token)
            .json(&json!({"client_message_id": id, "body": body}))
    }

    /// Mallory sends these exact bytes as `application/json`.
    fn send_bytes(&self, bytes: Vec<u8>) -> Request {
        Request::post(self.send_path())
            .bearer(&self.mallory.token)
            .raw("application/json", bytes)
    }

    /// A join of the demo site's room.
    fn join(&self, nickname: &str) -> Request {
        Request::post("/api/v1/join").json(&json!({"site_key": "demo", "nickname": nickname}))
    }

    fn join_bytes(&self, content_type: &str, bytes: Vec<u8>) -> Request {
        Request::post("/api/v1/join").raw(content_type, bytes)
    }

    /// A poll of the demo room with `token`.
    fn poll_with(&self, token: &str) -> Request {
        Request::get(format!(
            "{}?cursor={}",
            self.events_path(),
            self.mallory.cursor
        ))
        .bearer(token)
    }

    /// Mallory's claims, re-signed with changes.
    fn claims(&self) -> GuestClaims {
        TokenKey::new(TEST_SECRET)
            .verify_signature(&self.mallory.token)
            .expect("mallory's token verifies")
    }
}

/// A JSON send body of `len` bytes or more: `{"client_message_id":…,"body":"xxx…"}`.
fn big_send_body(len: usize) -> Vec<u8> {
    let head = br#"{"client_message_id":"big","body":""#;
    let tail = br#""}"#;
    let mut bytes = head.to_vec();
    bytes.resize(len.max(head.len() + tail.len()) - tail.len(), b'x');
    bytes.extend_from_slice(tail);
    bytes
}

/// The hostile corpus and the documented outcome of each case.
fn cases(f: &Fixture) -> Vec<Case> {
    use ErrorCode::*;
    let send = f.send_path();
    let events = f.events_path();
    let demo = f.demo_room;
    let other_site = format!("/api/v1/admin/sites/{}", f.other_key);
    let strict_site = format!("/api/v1/admin/sites/{}", f.strict_key);
    let claims = f.claims();
    let expired = TokenKey::new(TEST_SECRET).sign(&GuestClaims {
        expires_at: chrono::Utc::now().timestamp() - 60,
        ..claims.clone()
    });
    let forged = TokenKey::new("not the server's secret, but long enough!").sign(&claims);
    let truncated = f.mallory.token[..f.mallory.token.len() - 8].to_owned();
    // Mallory's signature on a payload naming another guest.
    let tampered = {
        let (_, mac) = f.mallory.token.rsplit_once('.').expect("a signed token");
        let payload = serde_json::to_vec(&GuestClaims {
            guest_id: "someone-else".into(),
            ..claims.clone()
        })
        .expect("claims json");
        format!("v1.{}.{mac}", URL_SAFE_NO_PAD.encode(payload))
    };
    let forged_admin = format!("chatty_adm_{}", "A".repeat(43));
    let zalgo = format!("Z{}", "\u{0336}".repeat(30));
    let decomposed = "e\u{0301}".repeat(MAX_BODY_CHARS);
    let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";

    vec![
        // --- XSS: stored verbatim, inert text -----------------------------------
        accepted(
            "xss_script_body",
            "a <script> element is text: stored and served byte for byte, never escaped",
            f.send("xss-1", "<script>alert(1)</script>"),
            Expect::Stored("<script>alert(1)</script>".into()),
        ),
        accepted(
            "xss_img_onerror_body",
            "an event-handler attribute is text too",
            f.send("xss-2", "<img src=x onerror=alert(1)>"),
            Expect::Stored("<img src=x onerror=alert(1)>".into()),
        ),
        accepted(
            "xss_javascript_url_body",
            "a javascript: URL is neither a link (not counted) nor rewritten",
            f.send("xss-3", "javascript:alert(document.cookie)"),
            Expect::Stored("javascript:alert(document.cookie)".into()),
        ),
        accepted(
            "xss_attribute_breakout_body",
            "quotes and angle brackets that would break out of an attribute are kept",
            f.send("xss-4", "\"><svg/onload=alert(1)>"),
            Expect::Stored("\"><svg/onload=alert(1)>".into()),
        ),
        accepted(
            "xss_entities_body",
            "HTML entities are not decoded: what was typed is what is stored",
            f.send("xss-5", "&lt;b&gt;bold&lt;/b&gt; &#60;script&#62;"),
            Expect::Stored("&lt;b&gt;bold&lt;/b&gt; &#60;script&#62;".into()),
        ),
        accepted(
            "xss_template_body",
            "template-injection syntax is plain text to the server",
            f.send(
                "xss-6",
                "{{constructor.constructor('alert(1)')()}} ${alert(1)}",
            ),
            Expect::Stored("{{constructor.constructor('alert(1)')()}} ${alert(1)}".into()),
        ),
        accepted(
            "xss_script_nickname",
            "a nickname with markup is accepted verbatim (rendered as text)",
            f.join("<script>alert(1)</script>"),
            Expect::Joined("<script>alert(1)</script>".into()),
        ),
        accepted(
            "xss_attribute_breakout_nickname",
            "attribute break-out characters in a nickname are kept",
            f.join("\"><svg/onload=alert(1)>"),
            Expect::Joined("\"><svg/onload=alert(1)>".into()),
        ),
        // --- SQL metacharacters: data, never code ---------------------------------
        accepted(
            "sql_drop_table_body",
            "quotes, semicolons and comments are stored verbatim; the table keeps working",
            f.send("sql-1", "'; DROP TABLE messages; --"),
            Expect::Stored("'; DROP TABLE messages; --".into()),
        ),
        accepted(
            "sql_sleep_and_wildcards_body",
            "backslash escapes, SLEEP() and LIKE wildcards are stored as typed",
            f.send("sql-2", "\\' OR 1=1; SELECT SLEEP(5); -- %_\\%"),
            Expect::Stored("\\' OR 1=1; SELECT SLEEP(5); -- %_\\%".into()),
        ),
        accepted(
            "sql_nickname",
            "a nickname with SQL in it is just a name",
            f.join("Robert'); DROP TABLE guests;--"),
            Expect::Joined("Robert'); DROP TABLE guests;--".into()),
        ),
        refused(
            "sql_site_key",
            "site keys are [A-Za-z0-9_-]: a quote never reaches the database",
            Request::post("/api/v1/join")
                .json(&json!({"site_key": "demo' OR '1'='1", "nickname": "Eve"})),
            400,
            InvalidSiteKey,
        ),
        refused(
            "sql_like_site_key",
            "a well-formed key that names no site is unknown, whatever it spells",
            Request::post("/api/v1/join")
                .json(&json!({"site_key": "demo_OR_1_1--", "nickname": "Eve"})),
            404,
            UnknownSite,
        ),
        refused(
            "sql_client_message_id",
            "client message ids are [A-Za-z0-9_.:-]{1,64}",
            f.send("'; DROP TABLE messages; --", "hi"),
            400,
            InvalidClientMessageId,
        ),
        refused(
            "xss_client_message_id",
            "markup in a client message id is refused, not echoed",
            f.send("<script>", "hi"),
            400,
            InvalidClientMessageId,
        ),
        refused(
            "sql_room_id_in_path",
            "a room id is a number: `1 OR 1=1` is a malformed path",
            Request::post("/api/v1/rooms/1%20OR%201=1/messages")
                .bearer(&f.mallory.token)
                .json(&json!({"client_message_id": "p", "body": "hi"})),
            400,
            InvalidPath,
        ),
        refused(
            "sql_stacked_room_id_in_path",
            "a room id followed by a statement is a malformed path",
            Request::get(format!(
                "/api/v1/rooms/{demo};DROP%20TABLE%20rooms/events?cursor=0.0.0"
            ))
            .bearer(&f.mallory.token),
            400,
            InvalidPath,
        ),
        refused(
            "sql_page",
            "a page path is printable ASCII without spaces",
            Request::post("/api/v1/join")
                .json(&json!({"site_key": "demo", "nickname": "Eve", "page": "/' OR '1'='1"})),
            400,
            InvalidPage,
        ),
        refused(
            "sql_cursor",
            "a cursor is SEQ.EPOCH.PRESENCE numbers",
            Request::get(format!("{events}?cursor=1'%20OR%20'1'%3D'1")).bearer(&f.mallory.token),
            400,
            InvalidCursor,
        ),
        refused(
            "sql_admin_site_key",
            "an unknown key in an admin path answers a site token 403, like another site's",
            Request::get("/api/v1/admin/sites/x'%20OR%20'1'='1").bearer(&f.other_admin),
            403,
            Forbidden,
        ),
        // --- Bidi controls: refused --------------------------------------------------
        refused(
            "bidi_override_body",
            "U+202E would render `invoice\u{202E}fdp.exe` as `invoiceexe.pdf`",
            f.send("bidi-1", "invoice\u{202E}fdp.exe"),
            400,
            BodyInvalid,
        ),
        refused(
            "bidi_isolate_body",
            "isolates (U+2066-U+2069) reorder text too",
            f.send("bidi-2", "\u{2067}abc\u{2069}"),
            400,
            BodyInvalid,
        ),
        refused(
            "bidi_mark_body",
            "an invisible right-to-left mark (U+200F) is a bidi control",
            f.send("bidi-3", "price\u{200F}100"),
            400,
            BodyInvalid,
        ),
        refused(
            "bidi_override_nickname",
            "a nickname with U+202E could impersonate another",
            f.join("evil\u{202E}gpj.exe"),
            400,
            NicknameInvalid,
        ),
        refused(
            "bidi_arabic_mark_nickname",
            "U+061C (Arabic letter mark) is a bidi control",
            f.join("\u{061C}Nadia"),
            400,
            NicknameInvalid,
        ),
        // --- Zero-width characters -------------------------------------------------
        refused(
            "zero_width_joiner_run_body",
            "two joiners in a row are a zero-width run",
            f.send("zw-1", "a\u{200D}\u{200D}b"),
            400,
            BodyInvalid,
        ),
        refused(
            "zero_width_joiner_leading_body",
            "a joiner that starts the text joins nothing",
            f.send("zw-2", "\u{200D}hello"),
            400,
            BodyInvalid,
        ),
        refused(
            "zero_width_non_joiner_trailing_body",
            "a non-joiner that ends the text joins nothing",
            f.send("zw-3", "hello\u{200C}"),
            400,
            BodyInvalid,
        ),
        refused(
            "zero_width_joiner_trailing_nickname",
            "a trailing joiner would make `Zed` and `Zed\u{200D}` two names",
            f.join("Zed\u{200D}"),
            400,
            NicknameInvalid,
        ),
        accepted(
            "zero_width_space_stripped_body",
            "U+200B, U+2060 and U+FEFF carry no meaning: stripped, the rest stored",
            f.send("zw-4", "he\u{200B}llo wor\u{2060}ld\u{FEFF}"),
            Expect::Stored("hello world".into()),
        ),
        accepted(
            "zero_width_space_stripped_nickname",
            "a nickname loses its zero-width spaces",
            f.join("Bo\u{200B}b"),
            Expect::Joined("Bob".into()),
        ),
        accepted(
            "zero_width_joiner_in_emoji_kept",
            "a single joiner between visible characters builds emoji: kept",
            f.send("zw-5", family),
            Expect::Stored(family.into()),
        ),
        // --- Combining marks --------------------------------------------------------
        refused(
            "zalgo_body",
            "30 combining marks on one letter paint over neighbouring lines",
            f.send("cm-1", &zalgo),
            400,
            BodyInvalid,
        ),
        refused(
            "five_combining_marks_body",
            "more than 4 marks on one base character is a flood",
            f.send("cm-2", "x\u{0300}\u{0301}\u{0302}\u{0303}\u{0304}"),
            400,
            BodyInvalid,
        ),
        accepted(
            "four_combining_marks_body",
            "4 marks on one base character are allowed and kept as sent",
            f.send("cm-3", "x\u{0300}\u{0301}\u{0302}\u{0303}"),
            Expect::Stored("x\u{0300}\u{0301}\u{0302}\u{0303}".into()),
        ),
        refused(
            "zalgo_nickname",
            "a combining-mark flood in a nickname",
            f.join("Z\u{0336}\u{0336}\u{0336}\u{0336}\u{0336}\u{0336}"),
            400,
            NicknameInvalid,
        ),
        accepted(
            "decomposed_accents_counted_after_nfc",
            "2000 e+U+0301 are 4000 code points but 2000 characters once NFC: accepted, stored composed",
            f.send("cm-4", &decomposed),
            Expect::Stored("\u{e9}".repeat(MAX_BODY_CHARS)),
        ),
        // --- Control characters -------------------------------------------------------
        refused(
            "nul_body",
            "NUL is a control character",
            f.send("cc-1", "a\u{0000}b"),
            400,
            BodyInvalid,
        ),
        refused(
            "ansi_escape_body",
            "terminal escapes (ESC) would reach moderators' terminals and logs",
            f.send("cc-2", "\u{001B}[2J\u{001B}[31mred"),
            400,
            BodyInvalid,
        ),
        refused(
            "line_separator_body",
            "U+2028 breaks lines where the widget and JavaScript do not expect it",
            f.send("cc-3", "a\u{2028}b"),
            400,
            BodyInvalid,
        ),
        refused(
            "noncharacter_body",
            "U+FFFF is a noncharacter",
            f.send("cc-4", "a\u{FFFF}b"),
            400,
            BodyInvalid,
        ),
        refused(
            "newline_nickname",
            "a nickname is one line",
            f.join("two\nlines"),
            400,
            NicknameInvalid,
        ),
        // --- Size --------------------------------------------------------------------
        refused(
            "one_megabyte_send",
            "a body above server.max_request_bytes (32 KiB) is refused by its Content-Length",
            f.send_bytes(big_send_body(MB)),
            413,
            PayloadTooLarge,
        ),
        refused(
            "one_megabyte_send_chunked",
            "without a Content-Length the limit applies while reading",
            Request::post(send.clone())
                .bearer(&f.mallory.token)
                .chunked(big_send_body(MB)),
            413,
            PayloadTooLarge,
        ),
        refused(
            "one_megabyte_join",
            "the join has the same limit",
            f.join_bytes("application/json", {
                let mut bytes = br#"{"site_key":"demo","nickname":""#.to_vec();
                bytes.resize(MB, b'n');
                bytes.extend_from_slice(br#""}"#);
                bytes
            }),
            413,
            PayloadTooLarge,
        ),
        refused(
            "one_byte_over_the_request_limit",
            "32 KiB + 1 byte is over the limit",
            f.send_bytes(big_send_body(MAX_REQUEST_BYTES + 1)),
            413,
            PayloadTooLarge,
        ),
        refused(
            "body_one_character_too_long",
            "chat.max_body_chars + 1 characters",
            f.send("len-1", &"x".repeat(MAX_BODY_CHARS + 1)),
            400,
            BodyTooLong,
        ),
        accepted(
            "body_of_max_chars_in_four_byte_emoji",
            "2000 characters of 4 UTF-8 bytes each fit: the byte limit leaves room for them",
            f.send("len-2", &"\u{1F600}".repeat(MAX_BODY_CHARS)),
            Expect::Stored("\u{1F600}".repeat(MAX_BODY_CHARS)),
        ),
        refused(
            "nickname_too_long",
            "33 characters",
            f.join(&"N".repeat(33)),
            400,
            NicknameTooLong,
        ),
        // --- Encoding and JSON -----------------------------------------------------------
        refused(
            "invalid_utf8_join",
            "bytes 0xFF 0xFE are not UTF-8: the JSON does not parse",
            f.join_bytes(
                "application/json",
                b"{\"site_key\":\"demo\",\"nickname\":\"\xff\xfe\"}".to_vec(),
            ),
            400,
            MalformedJson,
        ),
        refused(
            "overlong_utf8_send",
            "an overlong encoding of `<` (0xC0 0xBC) is not UTF-8",
            f.send_bytes(b"{\"client_message_id\":\"u-1\",\"body\":\"\xc0\xbcscript\"}".to_vec()),
            400,
            MalformedJson,
        ),
        refused(
            "lone_surrogate_escape_send",
            "\\ud800 escapes half a character",
            f.send_bytes(br#"{"client_message_id":"u-2","body":"a\ud800b"}"#.to_vec()),
            400,
            MalformedJson,
        ),
        refused(
            "ten_thousand_nested_arrays_join",
            "serde_json's recursion limit (128) refuses it without exhausting the stack",
            f.join_bytes(
                "application/json",
                format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            ),
            400,
            MalformedJson,
        ),
        refused(
            "five_thousand_nested_objects_send",
            "nested objects hit the same limit",
            f.send_bytes(format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)).into_bytes()),
            400,
            MalformedJson,
        ),
        refused(
            "array_instead_of_object_join",
            "serde would read a struct from an array of its fields; the API takes objects only",
            f.join_bytes("application/json", br#"["demo","Ann"]"#.to_vec()),
            400,
            MalformedJson,
        ),
        refused(
            "wrong_type_body",
            "the body must be a string",
            f.send_bytes(br#"{"client_message_id":"t-1","body":true}"#.to_vec()),
            400,
            MalformedJson,
        ),
        refused(
            "operator_object_nickname",
            "a NoSQL-style operator object where a string belongs",
            Request::post("/api/v1/join")
                .json(&json!({"site_key": "demo", "nickname": {"$ne": null}})),
            400,
            MalformedJson,
        ),
        refused(
            "unknown_field_join",
            "unknown fields are refused (no mass assignment of e.g. `admin`)",
            Request::post("/api/v1/join")
                .json(&json!({"site_key": "demo", "nickname": "Eve", "admin": true})),
            400,
            MalformedJson,
        ),
        accepted(
            "duplicate_keys_send",
            "with a key given twice the last one wins (serde_json map semantics)",
            f.send_bytes(
                br#"{"client_message_id":"dup-1","body":"first","body":"second"}"#.to_vec(),
            ),
            Expect::Stored("second".into()),
        ),
        refused(
            "trailing_garbage_send",
            "anything after the JSON value makes the body malformed",
            f.send_bytes(br#"{"client_message_id":"g-1","body":"hi"} trailing"#.to_vec()),
            400,
            MalformedJson,
        ),
        refused(
            "empty_body_send",
            "no body at all",
            f.send_bytes(Vec::new()),
            400,
            MalformedJson,
        ),
        refused(
            "byte_order_mark_join",
            "a UTF-8 byte-order mark before the JSON is not JSON",
            f.join_bytes(
                "application/json",
                b"\xef\xbb\xbf{\"site_key\":\"demo\",\"nickname\":\"Eve\"}".to_vec(),
            ),
            400,
            MalformedJson,
        ),
        // --- Content types ---------------------------------------------------------------
        refused(
            "text_plain_join",
            "JSON sent as text/plain (a CORS-simple request) is refused",
            f.join_bytes(
                "text/plain",
                br#"{"site_key":"demo","nickname":"Eve"}"#.to_vec(),
            ),
            415,
            UnsupportedMediaType,
        ),
        refused(
            "form_encoded_join",
            "a form post is refused",
            f.join_bytes(
                "application/x-www-form-urlencoded",
                b"site_key=demo&nickname=Eve".to_vec(),
            ),
            415,
            UnsupportedMediaType,
        ),
        refused(
            "no_content_type_send",
            "a body without a content type is refused",
            Request {
                payload: Payload::Bytes(br#"{"client_message_id":"ct-1","body":"hi"}"#.to_vec()),
                ..Request::post(send.clone()).bearer(&f.mallory.token)
            },
            415,
            UnsupportedMediaType,
        ),
        // --- Guest tokens --------------------------------------------------------------
        refused(
            "forged_token",
            "claims signed with another secret",
            Request::post(send.clone())
                .bearer(&forged)
                .json(&json!({"client_message_id": "tk-1", "body": "hi"})),
            401,
            InvalidToken,
        ),
        refused(
            "expired_token",
            "a genuine token past its expiry: join again",
            f.poll_with(&expired),
            401,
            TokenExpired,
        ),
        refused(
            "truncated_token",
            "a token cut short does not verify",
            Request::post(send.clone())
                .bearer(&truncated)
                .json(&json!({"client_message_id": "tk-2", "body": "hi"})),
            401,
            InvalidToken,
        ),
        refused(
            "tampered_token_payload",
            "a genuine signature on changed claims does not verify",
            f.poll_with(&tampered),
            401,
            InvalidToken,
        ),
        refused(
            "sql_token",
            "garbage in the token's place",
            f.poll_with("v1.' OR 1=1 --.x"),
            401,
            InvalidToken,
        ),
        refused(
            "oversized_token",
            "tokens above 1 KiB are refused before any work",
            f.poll_with(&format!("v1.{}", "A".repeat(5000))),
            401,
            InvalidToken,
        ),
        refused(
            "bearer_without_token",
            "`Bearer` and nothing else is no token",
            Request::get(format!("{events}?cursor=0.0.0")).header("authorization", "Bearer"),
            401,
            MissingToken,
        ),
        refused(
            "basic_auth",
            "another scheme is no token",
            Request::get(format!("{events}?cursor=0.0.0"))
                .header("authorization", "Basic YWRtaW46YWRtaW4="),
            401,
            MissingToken,
        ),
        refused(
            "token_of_another_room",
            "a guest of the /elsewhere page room cannot post to the site room",
            f.send_as(&f.pat, "tk-3", "hi").with_path(send.clone()),
            403,
            WrongRoom,
        ),
        refused(
            "token_of_another_site_send",
            "a guest of site Other cannot post to the demo site's room",
            f.send_as(&f.olga, "tk-4", "hi").with_path(send.clone()),
            403,
            WrongRoom,
        ),
        refused(
            "token_of_another_site_poll",
            "nor read it",
            f.poll_with(&f.olga.token),
            403,
            WrongRoom,
        ),
        refused(
            "negative_room_id",
            "a room id the token does not name (here -1) is another room",
            f.send("tk-5", "hi").with_path("/api/v1/rooms/-1/messages"),
            403,
            WrongRoom,
        ),
        refused(
            "websocket_forged_token",
            "the WebSocket handshake checks the token before upgrading",
            Request::get(format!(
                "/api/v1/rooms/{demo}/ws?token={forged}&cursor=0.0.0"
            ))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            401,
            InvalidToken,
        ),
        refused(
            "websocket_without_upgrade",
            "a plain GET of the WebSocket endpoint",
            Request::get(format!("/api/v1/rooms/{demo}/ws")).bearer(&f.mallory.token),
            400,
            NotWebsocket,
        ),
        // --- Admin API tokens ----------------------------------------------------------
        accepted(
            "admin_moderator_token_on_its_site",
            "the moderator token used below is valid: the refusals are about scope",
            Request::get(other_site.clone()).bearer(&f.other_moderator),
            Expect::Answered(200),
        ),
        refused(
            "admin_forged_token",
            "a well-formed admin token nobody was given",
            Request::get(other_site.clone()).bearer(&forged_admin),
            401,
            InvalidToken,
        ),
        refused(
            "admin_moderator_token_of_another_site",
            "a moderator of site Other on the demo site",
            Request::get("/api/v1/admin/sites/demo").bearer(&f.other_moderator),
            403,
            Forbidden,
        ),
        refused(
            "admin_admin_token_of_another_site",
            "an admin of site Other on site Strict",
            Request::get(format!("{strict_site}/rooms")).bearer(&f.other_admin),
            403,
            Forbidden,
        ),
        refused(
            "admin_moderator_token_on_admin_endpoint",
            "a moderator may not change the site (PATCH is admin-only)",
            Request::new(Method::PATCH, other_site.clone())
                .bearer(&f.other_moderator)
                .json(&json!({"disabled": true})),
            403,
            Forbidden,
        ),
        refused(
            "admin_moderator_token_creating_tokens",
            "a moderator may not mint tokens (no escalation to admin)",
            Request::post(format!("{other_site}/tokens"))
                .bearer(&f.other_moderator)
                .json(&json!({"role": "admin", "label": "me"})),
            403,
            Forbidden,
        ),
        refused(
            "admin_site_token_creating_sites",
            "only the operator creates sites",
            Request::post("/api/v1/admin/sites")
                .bearer(&f.other_admin)
                .json(&json!({"name": "Mine", "origins": ["https://mine.example"]})),
            403,
            Forbidden,
        ),
        refused(
            "admin_guest_token",
            "a guest token is not an admin token",
            Request::get("/api/v1/admin/sites/demo").bearer(&f.mallory.token),
            401,
            InvalidToken,
        ),
        refused(
            "admin_token_with_sql_suffix",
            "a real token with anything appended is another token",
            Request::get(other_site.clone()).bearer(&format!("{}' OR '1'='1", f.other_moderator)),
            401,
            InvalidToken,
        ),
        refused(
            "admin_no_token",
            "the admin API needs a token",
            Request::get("/api/v1/admin/sites"),
            401,
            MissingToken,
        ),
        // --- Origins (site Other allows https://other.example only) -------------------
        refused(
            "origin_foreign_join",
            "a page on another origin cannot embed the chat",
            Request::post("/api/v1/join")
                .origin("https://evil.example")
                .json(&json!({"site_key": f.other_key, "nickname": "Eve"})),
            403,
            OriginNotAllowed,
        ),
        refused(
            "origin_null_join",
            "a sandboxed iframe or file: page sends Origin: null",
            Request::post("/api/v1/join")
                .origin("null")
                .json(&json!({"site_key": f.other_key, "nickname": "Eve"})),
            403,
            OriginNotAllowed,
        ),
        refused(
            "origin_suffix_trick_join",
            "an allowed origin as a prefix of another host is another origin",
            Request::post("/api/v1/join")
                .origin("https://other.example.evil.com")
                .json(&json!({"site_key": f.other_key, "nickname": "Eve"})),
            403,
            OriginNotAllowed,
        ),
        refused(
            "origin_foreign_poll",
            "a stolen token used from another origin cannot read",
            Request::get(format!(
                "/api/v1/rooms/{}/events?cursor={}",
                f.olga.room.id, f.olga.cursor
            ))
            .bearer(&f.olga.token)
            .origin("https://evil.example"),
            403,
            OriginNotAllowed,
        ),
        refused(
            "origin_foreign_send",
            "nor write",
            f.send_as(&f.olga, "or-1", "hi")
                .origin("https://evil.example"),
            403,
            OriginNotAllowed,
        ),
        // --- Nicknames -------------------------------------------------------------------
        refused(
            "reserved_nickname_admin",
            "staff names are reserved",
            f.join("admin"),
            400,
            NicknameReserved,
        ),
        refused(
            "reserved_nickname_moderator",
            "in any case",
            f.join("Moderator"),
            400,
            NicknameReserved,
        ),
        refused(
            "reserved_nickname_look_alike",
            "Cyrillic А and a lowercase l for I still spell ADMIN",
            f.join("\u{0410}DMlN"),
            400,
            NicknameReserved,
        ),
        refused(
            "look_alike_of_present_member",
            "Cyrillic `Аnn` while Ann (the background guest) is in the room",
            f.join("\u{0410}nn"),
            409,
            NicknameTaken,
        ),
        refused(
            "other_case_of_present_member",
            "`ANN` while Ann is in the room",
            f.join("ANN"),
            409,
            NicknameTaken,
        ),
        // --- Links and the word filter --------------------------------------------------
        refused(
            "four_links",
            "limits.max_links_per_message is 3",
            f.send(
                "ln-1",
                "https://one.example http://two.example www.three.com four.net",
            ),
            400,
            TooManyLinks,
        ),
        accepted(
            "three_links",
            "3 links are allowed, stored as sent",
            f.send(
                "ln-2",
                "https://one.example http://two.example www.three.com",
            ),
            Expect::Stored("https://one.example http://two.example www.three.com".into()),
        ),
        accepted(
            "masked_word",
            "site Other masks `badword`: stored with one star per letter",
            f.send_as(&f.olga, "wf-1", "you badword!"),
            Expect::Stored("you *******!".into()),
        ),
        accepted(
            "masked_word_in_fullwidth",
            "fullwidth letters fold to the filtered word and are masked too",
            f.send_as(
                &f.olga,
                "wf-2",
                "you \u{FF42}\u{FF41}\u{FF44}\u{FF57}\u{FF4F}\u{FF52}\u{FF44}",
            ),
            Expect::Stored("you *******".into()),
        ),
        refused(
            "rejected_word",
            "site Strict rejects messages with `spam`",
            f.send_as(&f.sam, "wf-3", "buy spam now"),
            400,
            WordFiltered,
        ),
        // --- Query strings and headers ------------------------------------------------------
        refused(
            "sixty_thousand_digit_cursor",
            "a 60 KB cursor (about the longest URL clients send) is malformed, not an overflow",
            Request::get(format!("{events}?cursor={}", "9".repeat(60_000)))
                .bearer(&f.mallory.token),
            400,
            InvalidCursor,
        ),
        refused(
            "overflowing_cursor",
            "a seq of 2^64 does not fit",
            Request::get(format!("{events}?cursor=18446744073709551616.0.0"))
                .bearer(&f.mallory.token),
            400,
            InvalidCursor,
        ),
        refused(
            "missing_cursor",
            "the poll needs a cursor",
            Request::get(events.clone()).bearer(&f.mallory.token),
            400,
            InvalidQuery,
        ),
        refused(
            "negative_wait",
            "wait is a whole number of seconds",
            Request::get(format!("{events}?cursor={}&wait=-1", f.mallory.cursor))
                .bearer(&f.mallory.token),
            400,
            InvalidQuery,
        ),
        accepted(
            "sixteen_kilobyte_header",
            "a large but legal header does not disturb the poll",
            f.poll_with(&f.mallory.token)
                .header("x-padding", "p".repeat(16 * 1024)),
            Expect::Answered(200),
        ),
        accepted(
            "junk_if_none_match",
            "an If-None-Match that names no cursor just gets the full answer",
            f.poll_with(&f.mallory.token).header(
                "if-none-match",
                format!("\"{}\", W/\"*\"", "z".repeat(8000)),
            ),
            Expect::Answered(200),
        ),
        // --- Paths and methods ---------------------------------------------------------------
        refused(
            "delete_join",
            "the join is POST only",
            Request::new(Method::DELETE, "/api/v1/join"),
            405,
            MethodNotAllowed,
        ),
        refused(
            "put_messages",
            "messages are POSTed",
            Request::new(Method::PUT, send.clone())
                .bearer(&f.mallory.token)
                .json(&json!({"client_message_id": "m-1", "body": "hi"})),
            405,
            MethodNotAllowed,
        ),
        refused(
            "unknown_api_version",
            "no such route",
            Request::post("/api/v2/join").json(&json!({"site_key": "demo", "nickname": "Eve"})),
            404,
            NotFound,
        ),
        refused(
            "dot_dot_path",
            "dot segments resolve to a path that is not a route",
            Request::get("/api/v1/rooms/%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
            404,
            NotFound,
        ),
        refused(
            "dotenv_path",
            "no files are served from disk",
            Request::get("/.env"),
            404,
            NotFound,
        ),
        refused(
            "nul_room_id_in_path",
            "a percent-encoded NUL as a room id",
            Request::get("/api/v1/rooms/%00/events?cursor=0.0.0").bearer(&f.mallory.token),
            400,
            InvalidPath,
        ),
        refused(
            "overflowing_room_id_in_path",
            "a room id beyond 64 bits",
            Request::post("/api/v1/rooms/99999999999999999999/messages")
                .bearer(&f.mallory.token)
                .json(&json!({"client_message_id": "p-2", "body": "hi"})),
            400,
            InvalidPath,
        ),
        // --- Page paths -------------------------------------------------------------------------
        refused(
            "relative_dot_dot_page",
            "a page path starts with `/`",
            Request::post("/api/v1/join")
                .json(&json!({"site_key": "demo", "nickname": "Eve", "page": "../../etc/passwd"})),
            400,
            InvalidPage,
        ),
        refused(
            "javascript_page",
            "a URL is not a page path",
            Request::post("/api/v1/join").json(
                &json!({"site_key": "demo", "nickname": "Eve", "page": "javascript:alert(1)"}),
            ),
            400,
            InvalidPage,
        ),
        accepted(
            "absolute_dot_dot_page",
            "a page path is an opaque room name, never a file path: `/../../etc/passwd` is a room",
            Request::post("/api/v1/join").json(
                &json!({"site_key": "demo", "nickname": "Dot", "page": "/../../etc/passwd?x=1#y"}),
            ),
            Expect::JoinedPage("/../../etc/passwd".into()),
        ),
    ]
}

impl Request {
    fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }
}

// --- Running a case --------------------------------------------------------------

async fn send_request(node: &TestApp, request: &Request) -> Result<reqwest::Response, String> {
    let mut builder = node
        .client
        .request(request.method.clone(), node.url(&request.path));
    for (name, value) in &request.headers {
        builder = builder.header(*name, value.as_str());
    }
    builder = match &request.payload {
        Payload::None => builder,
        Payload::Bytes(bytes) => builder.body(bytes.clone()),
        Payload::Chunked(bytes) => {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                bytes.chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
            builder.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
        }
    };
    builder.send().await.map_err(|e| {
        format!(
            "no answer: {}",
            format!("{e:?}").chars().take(300).collect::<String>()
        )
    })
}

/// Checks a response against the case's outcome; a stored message is returned.
/// A refusal is checked as `helpers::assert_error` does (status, JSON content
/// type, the exact code, a message), but reported rather than panicking, so a
/// regression lists every case it breaks.
async fn check(case: &Case, response: reqwest::Response) -> Result<Option<MessageView>, String> {
    let status = response.status().as_u16();
    let content_type = header(&response, "content-type");
    let text = response
        .text()
        .await
        .map_err(|e| format!("{status}, body unreadable: {e}"))?;
    let shown: String = text.chars().take(300).collect();
    if status >= 500 {
        return Err(format!("a server error {status}: {shown}"));
    }
    match &case.expect {
        Expect::Refused(want, code) => {
            if status != *want {
                return Err(format!("status {status}, not {want} {code}: {shown}"));
            }
            if !content_type.starts_with("application/json") {
                return Err(format!("content type {content_type:?}: {shown}"));
            }
            let body: ErrorBody = serde_json::from_str(&text)
                .map_err(|e| format!("not an error body ({e}): {shown}"))?;
            if body.error.code != *code || body.error.message.is_empty() {
                return Err(format!("code {}, not {code}: {shown}", body.error.code));
            }
            Ok(None)
        }
        Expect::Stored(want) => {
            if status != 201 {
                return Err(format!("status {status}, not 201: {shown}"));
            }
            let sent: SendResponse =
                serde_json::from_str(&text).map_err(|e| format!("send response {e}: {shown}"))?;
            if !sent.created || sent.message.body != *want {
                return Err(format!(
                    "stored {:?} (created: {}), not {want:?}",
                    sent.message.body, sent.created
                ));
            }
            Ok(Some(sent.message))
        }
        Expect::Joined(want) => {
            let joined = join_response(status, &text)?;
            if joined.guest.nickname != *want {
                return Err(format!(
                    "joined as {:?}, not {want:?}",
                    joined.guest.nickname
                ));
            }
            Ok(None)
        }
        Expect::JoinedPage(want) => {
            let joined = join_response(status, &text)?;
            if joined.room.page.as_deref() != Some(want.as_str()) {
                return Err(format!("joined page {:?}, not {want:?}", joined.room.page));
            }
            Ok(None)
        }
        Expect::Answered(want) => {
            if status != *want {
                return Err(format!("status {status}, not {want}: {shown}"));
            }
            Ok(None)
        }
    }
}

fn join_response(status: u16, text: &str) -> Result<JoinResponse, String> {
    if status != 200 {
        return Err(format!(
            "status {status}, not 200: {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    serde_json::from_str(text).map_err(|e| format!("join response {e}"))
}

// --- The well-behaved clients ------------------------------------------------------------

/// What the background guest did.
#[derive(Debug, Default)]
struct Chatter {
    /// (seq, client message id, body) of every message it sent.
    sent: Vec<(u64, String, String)>,
    failures: Vec<String>,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// A guest who sends a fresh message every 50 ms, round-robin over the
/// nodes, and polls another node after each send, until `stop`; `progress`
/// counts the messages it got through.
fn background_guest(
    addresses: Vec<String>,
    guest: JoinResponse,
    stop: Arc<AtomicBool>,
    progress: watch::Sender<usize>,
) -> JoinHandle<Chatter> {
    tokio::spawn(async move {
        let client = http_client();
        let mut chatter = Chatter::default();
        let mut cursor = guest.cursor;
        let mut k = 0usize;
        while !stop.load(Ordering::SeqCst) {
            k += 1;
            let node = &addresses[k % addresses.len()];
            let id = format!("bg-{k}");
            let body = format!("background message {k}");
            let response = client
                .post(format!("{node}/api/v1/rooms/{}/messages", guest.room.id))
                .bearer_auth(&guest.token)
                .json(&json!({"client_message_id": id, "body": body}))
                .send()
                .await;
            match response {
                Ok(r) if r.status() == StatusCode::CREATED => {
                    match r.json::<SendResponse>().await {
                        Ok(s) if s.created && s.message.body == body => {
                            chatter.sent.push((s.message.seq, id, body));
                            progress.send_replace(chatter.sent.len());
                        }
                        other => chatter
                            .failures
                            .push(format!("send {k} via {node}: {other:?}")),
                    }
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    chatter
                        .failures
                        .push(format!("send {k} via {node}: {status} {text}"));
                }
                Err(e) => chatter.failures.push(format!("send {k} via {node}: {e:?}")),
            }
            let node = &addresses[(k + 1) % addresses.len()];
            let response = client
                .get(format!("{node}/api/v1/rooms/{}/events", guest.room.id))
                .query(&[("cursor", cursor.to_string())])
                .header("if-none-match", cursor.etag())
                .bearer_auth(&guest.token)
                .send()
                .await;
            match response {
                Ok(r) if r.status() == StatusCode::OK => match r.json::<PollResponse>().await {
                    Ok(poll) => cursor = poll.cursor,
                    Err(e) => chatter.failures.push(format!("poll {k} via {node}: {e}")),
                },
                Ok(r) if r.status() == StatusCode::NOT_MODIFIED => {}
                Ok(r) => chatter
                    .failures
                    .push(format!("poll {k} via {node}: {}", r.status())),
                Err(e) => chatter.failures.push(format!("poll {k} via {node}: {e:?}")),
            }
            tokio::time::sleep(BACKGROUND_EVERY).await;
        }
        chatter
    })
}

/// A guest polling one node every 100 ms until it has seen the room's
/// messages up to the target seq; every message it saw, in order.
fn watcher(
    address: String,
    guest: JoinResponse,
    mut target: watch::Receiver<Option<u64>>,
) -> JoinHandle<Result<Vec<MessageView>, String>> {
    tokio::spawn(async move {
        let client = http_client();
        let mut cursor = guest.cursor;
        let mut seen = Vec::new();
        loop {
            let goal = *target.borrow_and_update();
            if goal.is_some_and(|goal| cursor.seq >= goal) {
                return Ok(seen);
            }
            let response = client
                .get(format!("{address}/api/v1/rooms/{}/events", guest.room.id))
                .query(&[("cursor", cursor.to_string())])
                .header("if-none-match", cursor.etag())
                .bearer_auth(&guest.token)
                .send()
                .await
                .map_err(|e| format!("poll via {address}: {e:?}"))?;
            match response.status() {
                StatusCode::OK => {
                    let poll: PollResponse = response
                        .json()
                        .await
                        .map_err(|e| format!("poll via {address}: {e}"))?;
                    record(&poll, &mut seen)?;
                    cursor = poll.cursor;
                    if poll.more {
                        continue;
                    }
                }
                StatusCode::NOT_MODIFIED => {}
                other => return Err(format!("poll via {address}: {other}")),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Adds a batch's messages to `seen`; a reset is a failure here.
fn record(poll: &PollResponse, seen: &mut Vec<MessageView>) -> Result<(), String> {
    for event in &poll.events {
        match event {
            Event::Message { message } => seen.push(message.clone()),
            Event::Reset { reason } => return Err(format!("reset: {reason:?}")),
            _ => {}
        }
    }
    Ok(())
}

/// Reads a WebSocket until it has seen the target seq; the seqs it saw.
fn websocket_reader(
    mut ws: WsClient,
    mut target: watch::Receiver<Option<u64>>,
) -> JoinHandle<Result<Vec<u64>, String>> {
    tokio::spawn(async move {
        let mut seen: Vec<MessageView> = Vec::new();
        loop {
            let goal = *target.borrow_and_update();
            let last = seen.last().map_or(0, |m| m.seq);
            if goal.is_some_and(|goal| last >= goal) {
                return Ok(seen.iter().map(|m| m.seq).collect());
            }
            tokio::select! {
                event = ws.next_event() => match event {
                    WsEvent::Batch(batch) => record(&batch, &mut seen)?,
                    WsEvent::Closed(frame) => return Err(format!("the WebSocket closed: {frame:?}")),
                },
                changed = target.changed() => {
                    changed.map_err(|_| "the target was dropped".to_owned())?;
                }
            }
        }
    })
}

/// Every message of `guest`'s room up to `until`, polled from the join on `node`.
async fn messages_until(node: &TestApp, guest: &JoinResponse, until: u64) -> Vec<MessageView> {
    let mut cursor: RoomCursor = guest.cursor;
    let mut seen = Vec::new();
    for _ in 0..200 {
        if cursor.seq >= until {
            return seen;
        }
        let response = node.poll(guest, &cursor.to_string(), None).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "poll of room {}",
            guest.room.id
        );
        let poll: PollResponse = response.json().await.expect("poll response");
        record(&poll, &mut seen).expect("no reset");
        cursor = poll.cursor;
        if !poll.more {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!(
        "{} never saw room {} reach seq {until}",
        node.address, guest.room.id
    );
}

/// Waits (bounded) until `done` holds.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

// --- Set-up --------------------------------------------------------------------------

async fn join_with_origin(
    node: &TestApp,
    site_key: &str,
    origin: &str,
    nickname: &str,
) -> JoinResponse {
    let response = node
        .client
        .post(node.url("/api/v1/join"))
        .header("origin", origin)
        .json(&json!({"site_key": site_key, "nickname": nickname}))
        .send()
        .await
        .expect("join sent");
    assert_eq!(response.status(), StatusCode::OK, "join of {site_key}");
    response.json().await.expect("join response")
}

/// Sets a site's word filter through the admin API.
async fn set_word_filter(node: &TestApp, key: &str, token: &str, mode: &str, word: &str) {
    let response = node
        .client
        .put(node.url(&format!("/api/v1/admin/sites/{key}/moderation")))
        .bearer_auth(token)
        .json(&json!({"word_filter": {"mode": mode, "words": [word]}}))
        .send()
        .await
        .expect("moderation sent");
    assert_eq!(response.status(), StatusCode::OK, "word filter of {key}");
}

#[tokio::test]
async fn every_hostile_input_gets_its_documented_outcome_while_others_keep_chatting() {
    let deployment = Deployment::new(true).await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(
            spawn_node(Arc::clone(&deployment), |s| {
                crate::cluster_settings(s);
                // The background guest sends 20 messages a second.
                s.chat.sends_per_minute = 0;
                s.limits.max_links_per_message = 3;
                s.limits.repeat_window_secs = 0;
            })
            .await,
        );
    }
    let addresses: Vec<String> = nodes.iter().map(|n| n.address.clone()).collect();
    let settings = &nodes[0].state.settings;
    assert_eq!(settings.server.max_request_bytes, MAX_REQUEST_BYTES);
    assert_eq!(settings.chat.max_body_chars, MAX_BODY_CHARS);

    // The well-behaved: Ann chats, a watcher per node polls, Wes listens on
    // a WebSocket. All join before the first message.
    let ann = nodes[0].join("Ann").await;
    let demo_room = ann.room.id;
    let mut watchers_guests = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        watchers_guests.push(node.join(&format!("Watcher{i}")).await);
    }
    let wes = nodes[1].join("Wes").await;
    let ws = WsClient::connect(
        &ws_url(&nodes[1].address, &wes, &wes.cursor.to_string()),
        None,
    )
    .await
    .expect("the WebSocket upgrades");

    // The other sites: Other (masks "badword"), Strict (rejects "spam").
    let admin = nodes[0].state.admin.as_ref();
    let other = chatty_web::admin::create_site(admin, "Other", &["https://other.example".into()])
        .await
        .expect("site Other");
    let strict =
        chatty_web::admin::create_site(admin, "Strict", &["https://strict.example".into()])
            .await
            .expect("site Strict");
    let response = nodes[0]
        .client
        .post(nodes[0].url(&format!("/api/v1/admin/sites/{}/tokens", other.site.key)))
        .bearer_auth(&other.admin_token)
        .json(&json!({"role": "moderator", "label": "Mo"}))
        .send()
        .await
        .expect("token sent");
    assert_eq!(response.status(), StatusCode::CREATED, "moderator token");
    let other_moderator = response.json::<Value>().await.expect("token json")["secret"]
        .as_str()
        .expect("a secret")
        .to_owned();
    set_word_filter(
        &nodes[1],
        &other.site.key,
        &other_moderator,
        "mask",
        "badword",
    )
    .await;
    set_word_filter(
        &nodes[2],
        &strict.site.key,
        &strict.admin_token,
        "reject",
        "spam",
    )
    .await;

    let fixture = Fixture {
        demo_room,
        mallory: nodes[0].join("Mallory").await,
        pat: {
            let response = nodes[1]
                .join_raw(&json!({"site_key": "demo", "nickname": "Pat", "page": "/elsewhere"}))
                .await;
            assert_eq!(response.status(), StatusCode::OK, "join of /elsewhere");
            response.json().await.expect("join response")
        },
        olga: join_with_origin(&nodes[2], &other.site.key, "https://other.example", "Olga").await,
        sam: join_with_origin(&nodes[0], &strict.site.key, "https://strict.example", "Sam").await,
        other_key: other.site.key.clone(),
        other_admin: other.admin_token.clone(),
        other_moderator,
        strict_key: strict.site.key.clone(),
    };

    // Start the well-behaved clients.
    let stop = Arc::new(AtomicBool::new(false));
    let (target_tx, target_rx) = watch::channel(None::<u64>);
    let (progress_tx, mut progress) = watch::channel(0usize);
    let chatter = background_guest(
        addresses.clone(),
        ann.clone(),
        Arc::clone(&stop),
        progress_tx,
    );
    let watchers: Vec<_> = watchers_guests
        .iter()
        .zip(&addresses)
        .map(|(guest, address)| watcher(address.clone(), guest.clone(), target_rx.clone()))
        .collect();
    let listener = websocket_reader(ws, target_rx.clone());

    // Every node knows the word filters and sees Ann (for the look-alike case).
    let (other_id, strict_id) = (other.site.id, strict.site.id);
    for node in &nodes {
        eventually("every node has the word filters", || async move {
            let masking = node.state.directory.site_by_id(other_id).await;
            let rejecting = node.state.directory.site_by_id(strict_id).await;
            masking.is_ok_and(|s| s.word_filter.words == ["badword"])
                && rejecting.is_ok_and(|s| s.word_filter.words == ["spam"])
        })
        .await;
        eventually("every node sees Ann in the room", || async move {
            match node.state.hub.room(demo_room).await {
                Ok(room) => node.state.hub.nickname_taken(&room, "", "Ann"),
                Err(_) => false,
            }
        })
        .await;
    }

    // The corpus, case i on node i % 3. After each case the background guest
    // gets (at least) one more message through before the next case starts,
    // so the corpus and the chatter interleave by construction.
    let corpus = cases(&fixture);
    assert!(corpus.len() >= 55, "{} cases", corpus.len());
    let mut names = std::collections::HashSet::new();
    let mut mismatches = Vec::new();
    let mut stored: Vec<(&'static str, MessageView)> = Vec::new();
    for (i, case) in corpus.iter().enumerate() {
        assert!(names.insert(case.name), "two cases named {}", case.name);
        assert!(!case.why.is_empty(), "{} says why", case.name);
        if let Expect::Refused(status, code) = &case.expect {
            assert_eq!(
                *status,
                code.http_status(),
                "{}: {code} has its own status",
                case.name
            );
        }
        let node = &nodes[i % nodes.len()];
        let outcome = match send_request(node, &case.request).await {
            Ok(response) => check(case, response).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(Some(message)) => stored.push((case.name, message)),
            Ok(None) => {}
            Err(e) => mismatches.push(format!("{} (node {}): {e}", case.name, i % nodes.len())),
        }
        let before = *progress.borrow_and_update();
        tokio::time::timeout(CATCH_UP, progress.wait_for(|sent| *sent > before))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "after {}, the background guest got no message through",
                    case.name
                )
            })
            .expect("the background guest is running");
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases did not get their documented outcome:\n{}",
        mismatches.len(),
        corpus.len(),
        mismatches.join("\n")
    );

    // Stop the chatter; everything it and the corpus stored in the demo room
    // is seen in order, once, by a poll on every node and on the WebSocket.
    stop.store(true, Ordering::SeqCst);
    let chatter = chatter.await.expect("the background guest");
    assert!(
        chatter.failures.is_empty(),
        "the background guest was not served: {:#?}",
        chatter.failures
    );
    assert!(!chatter.sent.is_empty(), "the background guest sent");
    let demo_stored: Vec<&MessageView> = stored
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m.room_id == demo_room)
        .collect();
    let last = chatter
        .sent
        .iter()
        .map(|(seq, _, _)| *seq)
        .chain(demo_stored.iter().map(|m| m.seq))
        .max()
        .expect("messages");
    target_tx.send(Some(last)).expect("the target is watched");
    for (i, watcher) in watchers.into_iter().enumerate() {
        let seen = tokio::time::timeout(CATCH_UP, watcher)
            .await
            .unwrap_or_else(|_| panic!("watcher {i} caught up in time"))
            .expect("watcher task")
            .unwrap_or_else(|e| panic!("watcher on node {i} was not served: {e}"));
        let seqs: Vec<u64> = seen.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "node {i}: every message once, in order"
        );
        let by_seq: HashMap<u64, &MessageView> = seen.iter().map(|m| (m.seq, m)).collect();
        for (seq, id, body) in &chatter.sent {
            let message = by_seq[seq];
            assert_eq!(
                (&message.guest_id, &message.client_message_id, &message.body),
                (&ann.guest.id, id, body),
                "node {i}: the background guest's message {seq}"
            );
        }
        let from_ann = seen.iter().filter(|m| m.guest_id == ann.guest.id).count();
        assert_eq!(
            from_ann,
            chatter.sent.len(),
            "node {i}: Ann's messages, each once"
        );
        for message in &demo_stored {
            assert_eq!(
                by_seq[&message.seq].body, message.body,
                "node {i}: stored corpus message {}",
                message.seq
            );
        }
    }
    let ws_seqs = tokio::time::timeout(CATCH_UP, listener)
        .await
        .expect("the WebSocket caught up in time")
        .expect("WebSocket task")
        .unwrap_or_else(|e| panic!("the WebSocket was not served: {e}"));
    assert_eq!(
        ws_seqs,
        (1..=last).collect::<Vec<_>>(),
        "the WebSocket got every message once, in order, and is still open"
    );

    // Messages stored in the other rooms are served so on every node too.
    for (name, message) in stored.iter().filter(|(_, m)| m.room_id != demo_room) {
        let guest = [&fixture.olga, &fixture.sam, &fixture.pat]
            .into_iter()
            .find(|g| g.room.id == message.room_id)
            .expect("a guest of the room");
        for node in &nodes {
            let seen = messages_until(node, guest, message.seq).await;
            let served = seen.iter().find(|m| m.seq == message.seq);
            assert_eq!(
                served.map(|m| m.body.as_str()),
                Some(message.body.as_str()),
                "{name} on {}",
                node.address
            );
        }
    }

    // And every node is still healthy and ready.
    for node in &nodes {
        for path in ["/healthz", "/readyz"] {
            let response = node
                .client
                .get(node.url(path))
                .send()
                .await
                .expect("health answered");
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "{path} on {}",
                node.address
            );
        }
    }
}
