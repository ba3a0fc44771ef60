//! Sites, moderation and abuse protection through the HTTP API, on one node
//! (in every mode the API suite runs in). The same rules across several
//! nodes are in the cluster suite (`tests/cluster/moderation.rs`).

use std::time::Duration;

use chatty_protocol::api::{JoinResponse, PollResponse, SendResponse};
use chatty_protocol::{ErrorCode, Event};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, header, message_seqs, spawn_app_with};

pub const OPERATOR: &str = "operator-token-0123456789abcdef0123456789";
const ORIGIN: &str = "https://shop.example";

/// A site of its own with an admin and a moderator token.
pub struct TestSite {
    pub key: String,
    pub admin: String,
    pub moderator: String,
}

/// An admin API call.
pub async fn admin_call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Response {
    let mut request = app
        .client
        .request(method, app.url(&format!("/api/v1/admin{path}")))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("admin request")
}

pub async fn admin_json(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let response = admin_call(app, method, path, token, body).await;
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{path}: {status} {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("JSON")
    }
}

/// Creates a site (allowed origin [`ORIGIN`]) through the operator API and a
/// moderator token through its admin token.
pub async fn create_site(app: &TestApp) -> TestSite {
    let created = admin_json(
        app,
        Method::POST,
        "/sites",
        OPERATOR,
        Some(json!({"name": "Shop", "origins": [ORIGIN]})),
    )
    .await;
    let key = created["site"]["key"].as_str().expect("key").to_owned();
    let admin = created["admin_token"]
        .as_str()
        .expect("admin token")
        .to_owned();
    let moderator = admin_json(
        app,
        Method::POST,
        &format!("/sites/{key}/tokens"),
        &admin,
        Some(json!({"role": "moderator", "label": "Bea"})),
    )
    .await["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    TestSite {
        key,
        admin,
        moderator,
    }
}

/// Joins `site` as `nickname` from [`ORIGIN`], optionally as `forwarded_for`.
pub async fn join_site(
    app: &TestApp,
    key: &str,
    nickname: &str,
    forwarded_for: Option<&str>,
) -> Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/join"))
        .header("Origin", ORIGIN)
        .json(&json!({"site_key": key, "nickname": nickname}));
    if let Some(ip) = forwarded_for {
        request = request.header("X-Forwarded-For", ip);
    }
    request.send().await.expect("join")
}

pub async fn joined(app: &TestApp, key: &str, nickname: &str) -> JoinResponse {
    let response = join_site(app, key, nickname, None).await;
    assert_eq!(response.status(), StatusCode::OK, "join {nickname}");
    response.json().await.expect("join answer")
}

pub async fn send_as(
    app: &TestApp,
    guest: &JoinResponse,
    id: &str,
    body: &str,
    forwarded_for: Option<&str>,
) -> Response {
    let mut request = app
        .client
        .post(app.url(&format!("/api/v1/rooms/{}/messages", guest.room.id)))
        .header("Origin", ORIGIN)
        .bearer_auth(&guest.token)
        .json(&json!({"client_message_id": id, "body": body}));
    if let Some(ip) = forwarded_for {
        request = request.header("X-Forwarded-For", ip);
    }
    request.send().await.expect("send")
}

async fn sent(app: &TestApp, guest: &JoinResponse, id: &str, body: &str) -> u64 {
    let response = send_as(app, guest, id, body, None).await;
    assert_eq!(response.status(), StatusCode::CREATED, "send {id}");
    let sent: SendResponse = response.json().await.expect("send answer");
    sent.message.seq
}

async fn moderated_app() -> TestApp {
    spawn_app_with(|s| s.admin.operator_token = chatty_web::settings::Secret::new(OPERATOR)).await
}

#[tokio::test]
async fn a_site_is_created_with_a_key_an_admin_token_and_a_snippet_and_only_its_origins_may_chat() {
    let app = moderated_app().await;
    let created = admin_json(
        &app,
        Method::POST,
        "/sites",
        OPERATOR,
        Some(json!({"name": "Shop", "origins": ["HTTPS://Shop.Example/"]})),
    )
    .await;
    let key = created["site"]["key"].as_str().expect("key");
    assert_eq!(created["site"]["origins"], json!([ORIGIN]), "normalised");
    assert!(
        created["admin_token"]
            .as_str()
            .expect("token")
            .starts_with("chatty_adm_")
    );
    assert!(
        created["snippet"]
            .as_str()
            .expect("snippet")
            .contains(&format!("data-site=\"{key}\""))
    );

    let ann: JoinResponse = joined(&app, key, "Ann").await;
    // The widget copied to another origin: refused at join…
    let copied = app
        .client
        .post(app.url("/api/v1/join"))
        .header("Origin", "https://copycat.example")
        .json(&json!({"site_key": key, "nickname": "Cat"}))
        .send()
        .await
        .expect("join");
    assert_error(copied, 403, ErrorCode::OriginNotAllowed).await;
    // …and a token carried there is refused on every visitor call.
    let foreign = |method: Method, path: String| {
        app.client
            .request(method, app.url(&path))
            .header("Origin", "https://copycat.example")
            .bearer_auth(&ann.token)
    };
    let room = ann.room.id;
    let poll = foreign(
        Method::GET,
        format!("/api/v1/rooms/{room}/events?cursor={}", ann.cursor),
    )
    .send()
    .await
    .expect("poll");
    assert_error(poll, 403, ErrorCode::OriginNotAllowed).await;
    let send = foreign(Method::POST, format!("/api/v1/rooms/{room}/messages"))
        .json(&json!({"client_message_id": "x1", "body": "hi"}))
        .send()
        .await
        .expect("send");
    assert_error(send, 403, ErrorCode::OriginNotAllowed).await;
    let leave = foreign(Method::POST, format!("/api/v1/rooms/{room}/leave"))
        .send()
        .await
        .expect("leave");
    assert_error(leave, 403, ErrorCode::OriginNotAllowed).await;
    let sse = foreign(
        Method::GET,
        format!("/api/v1/rooms/{room}/sse?cursor={}", ann.cursor),
    )
    .send()
    .await
    .expect("sse");
    assert_error(sse, 403, ErrorCode::OriginNotAllowed).await;
    let ws = crate::push_client::WsClient::connect(
        &crate::push_client::ws_url(&app.address, &ann, &ann.cursor.to_string()),
        Some("https://copycat.example"),
    )
    .await;
    assert!(
        matches!(ws, Err((403, _))),
        "the WebSocket handshake is refused"
    );
    // From the allowed origin all of it works.
    assert_eq!(sent(&app, &ann, "ok-1", "hello").await, 1);
}

#[tokio::test]
async fn tokens_act_only_within_their_site_and_role() {
    let app = moderated_app().await;
    let shop = create_site(&app).await;
    let other = create_site(&app).await;
    let patch = async |token: &str, key: &str| {
        admin_call(
            &app,
            Method::PATCH,
            &format!("/sites/{key}"),
            token,
            Some(json!({"name": "Renamed"})),
        )
        .await
    };
    assert_error(
        patch(&shop.moderator, &shop.key).await,
        403,
        ErrorCode::Forbidden,
    )
    .await;
    assert_error(
        patch(&shop.admin, &other.key).await,
        403,
        ErrorCode::Forbidden,
    )
    .await;
    assert_error(
        patch(&shop.admin, "no-such-site").await,
        403,
        ErrorCode::Forbidden,
    )
    .await;
    assert_error(
        patch("chatty_adm_forged", &shop.key).await,
        401,
        ErrorCode::InvalidToken,
    )
    .await;
    let no_token = app
        .client
        .get(app.url(&format!("/api/v1/admin/sites/{}", shop.key)))
        .send()
        .await
        .expect("request");
    assert_error(no_token, 401, ErrorCode::MissingToken).await;
    assert_eq!(patch(&shop.admin, &shop.key).await.status(), StatusCode::OK);
    // A site token lists its own site only; the operator lists all.
    let own = admin_json(&app, Method::GET, "/sites", &shop.moderator, None).await;
    assert_eq!(own["sites"].as_array().map(Vec::len), Some(1));
    assert_eq!(own["role"], "moderator");
    assert_eq!(
        admin_json(&app, Method::GET, "/sites", &shop.admin, None).await["role"],
        "admin"
    );
    let all = admin_json(&app, Method::GET, "/sites", OPERATOR, None).await;
    assert!(
        all["sites"].as_array().map_or(0, Vec::len) >= 3,
        "demo + two"
    );
    assert_error(
        admin_call(
            &app,
            Method::POST,
            "/sites",
            &shop.admin,
            Some(json!({"name": "X", "origins": [ORIGIN]})),
        )
        .await,
        403,
        ErrorCode::Forbidden,
    )
    .await;
    // A revoked token stops working at once.
    let tokens = admin_json(
        &app,
        Method::GET,
        &format!("/sites/{}/tokens", shop.key),
        &shop.admin,
        None,
    )
    .await;
    let moderator_id = tokens["tokens"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["role"] == "moderator"))
        .and_then(|t| t["id"].as_i64())
        .expect("moderator token listed");
    let revoked = admin_call(
        &app,
        Method::DELETE,
        &format!("/sites/{}/tokens/{moderator_id}", shop.key),
        &shop.admin,
        None,
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_error(
        admin_call(
            &app,
            Method::GET,
            &format!("/sites/{}", shop.key),
            &shop.moderator,
            None,
        )
        .await,
        401,
        ErrorCode::InvalidToken,
    )
    .await;
}

#[tokio::test]
async fn a_deleted_message_leaves_the_history_and_pollers_are_told() {
    let app = moderated_app().await;
    let shop = create_site(&app).await;
    let ann = joined(&app, &shop.key, "Ann").await;
    for (i, text) in ["first", "rude", "third"].iter().enumerate() {
        sent(&app, &ann, &format!("m{i}"), text).await;
    }
    // A poller that has seen everything, and one that has seen nothing.
    let caught_up: PollResponse = app
        .poll(&ann, &ann.cursor.to_string(), None)
        .await
        .json()
        .await
        .expect("poll");
    assert_eq!(message_seqs(&caught_up), vec![1, 2, 3]);
    let path = format!("/sites/{}/rooms/{}/messages/2", shop.key, ann.room.id);
    let deleted = admin_json(&app, Method::DELETE, &path, &shop.moderator, None).await;
    assert_eq!(deleted, json!({"deleted_seq": 2, "event_seq": 4}));
    assert_eq!(
        admin_json(&app, Method::DELETE, &path, &shop.moderator, None).await,
        deleted,
        "deleting again answers the same and adds no event"
    );
    let told: PollResponse = app
        .poll(&ann, &caught_up.cursor.to_string(), None)
        .await
        .json()
        .await
        .expect("poll");
    assert_eq!(
        told.events,
        vec![Event::Delete {
            seq: 4,
            deleted_seq: 2
        }]
    );
    assert_eq!(told.cursor.seq, 4);
    let fresh: PollResponse = app
        .poll(&ann, &ann.cursor.to_string(), None)
        .await
        .json()
        .await
        .expect("poll");
    assert_eq!(
        message_seqs(&fresh),
        vec![1, 3],
        "a late poller never gets the deleted text"
    );
    assert!(
        !serde_json::to_string(&fresh.events)
            .expect("json")
            .contains("rude")
    );
    let bob = joined(&app, &shop.key, "Bob").await;
    assert_eq!(
        bob.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 3]
    );
    let listed = admin_json(
        &app,
        Method::GET,
        &format!("/sites/{}/rooms/{}/messages", shop.key, ann.room.id),
        &shop.moderator,
        None,
    )
    .await;
    let seqs: Vec<i64> = listed["messages"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["seq"].as_i64())
        .collect();
    assert_eq!(seqs, vec![3, 1], "newest first, without the deleted one");
    assert_error(
        admin_call(
            &app,
            Method::DELETE,
            &format!("/sites/{}/rooms/{}/messages/99", shop.key, ann.room.id),
            &shop.moderator,
            None,
        )
        .await,
        404,
        ErrorCode::UnknownMessage,
    )
    .await;
    let audit = admin_json(
        &app,
        Method::GET,
        &format!("/sites/{}/audit", shop.key),
        &shop.moderator,
        None,
    )
    .await;
    let deletes: Vec<&Value> = audit["actions"]
        .as_array()
        .expect("audit")
        .iter()
        .filter(|a| a["action"] == "delete_message")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0]["target"], "seq 2");
    assert!(
        deletes[0]["actor"]
            .as_str()
            .expect("actor")
            .starts_with("Bea (moderator")
    );
}

#[tokio::test]
async fn clearing_a_room_empties_its_history_for_everyone() {
    let app = moderated_app().await;
    let shop = create_site(&app).await;
    let ann = joined(&app, &shop.key, "Ann").await;
    for i in 0..3 {
        sent(&app, &ann, &format!("m{i}"), &format!("text {i}")).await;
    }
    let cleared = admin_json(
        &app,
        Method::POST,
        &format!("/sites/{}/rooms/{}/clear", shop.key, ann.room.id),
        &shop.moderator,
        None,
    )
    .await;
    assert_eq!(cleared["event_seq"], 4);
    let told: PollResponse = app
        .poll(&ann, &ann.cursor.to_string(), None)
        .await
        .json()
        .await
        .expect("poll");
    assert_eq!(told.events, vec![Event::Clear { seq: 4 }]);
    sent(&app, &ann, "after", "after the clear").await;
    let bob = joined(&app, &shop.key, "Bob").await;
    assert_eq!(
        bob.messages
            .iter()
            .map(|m| m.body.as_str())
            .collect::<Vec<_>>(),
        vec!["after the clear"]
    );
}

#[tokio::test]
async fn a_banned_guest_cannot_join_or_send_until_the_ban_is_lifted() {
    let app = moderated_app().await;
    let shop = create_site(&app).await;
    let troll = joined(&app, &shop.key, "Troll").await;
    let ann = joined(&app, &shop.key, "Ann").await;
    let ban = admin_json(
        &app,
        Method::POST,
        &format!("/sites/{}/bans", shop.key),
        &shop.moderator,
        Some(json!({"guest_id": troll.guest.id, "duration_secs": 3600, "reason": "spam"})),
    )
    .await;
    assert_error(
        send_as(&app, &troll, "t1", "spam", None).await,
        403,
        ErrorCode::Banned,
    )
    .await;
    // Rejoining with the old token keeps the guest id: still banned.
    let rejoin = app
        .client
        .post(app.url("/api/v1/join"))
        .header("Origin", ORIGIN)
        .json(&json!({"site_key": shop.key, "nickname": "Troll2", "token": troll.token}))
        .send()
        .await
        .expect("join");
    assert_error(rejoin, 403, ErrorCode::Banned).await;
    assert_eq!(sent(&app, &ann, "a1", "others still chat").await, 1);
    let bans = admin_json(
        &app,
        Method::GET,
        &format!("/sites/{}/bans", shop.key),
        &shop.moderator,
        None,
    )
    .await;
    assert_eq!(bans["bans"].as_array().map(Vec::len), Some(1));
    let id = ban["ban"]["id"].as_i64().expect("ban id");
    let lifted = admin_call(
        &app,
        Method::DELETE,
        &format!("/sites/{}/bans/{id}", shop.key),
        &shop.moderator,
        None,
    )
    .await;
    assert_eq!(lifted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        send_as(&app, &troll, "t2", "sorry", None).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn an_ip_ban_covers_every_guest_from_that_address() {
    let app = moderated_app().await;
    let shop = create_site(&app).await;
    let troll: JoinResponse = join_site(&app, &shop.key, "Troll", Some("198.51.100.7"))
        .await
        .json()
        .await
        .expect("join");
    assert_eq!(
        send_as(&app, &troll, "t1", "spam", Some("198.51.100.7"))
            .await
            .status(),
        StatusCode::CREATED
    );
    let listed = admin_json(
        &app,
        Method::GET,
        &format!("/sites/{}/rooms/{}/messages", shop.key, troll.room.id),
        &shop.moderator,
        None,
    )
    .await;
    let ip_hash = listed["messages"][0]["ip_hash"]
        .as_str()
        .expect("ip hash")
        .to_owned();
    assert_eq!(ip_hash.len(), 32);
    assert!(!ip_hash.contains("198"), "an IP is never shown");
    admin_json(
        &app,
        Method::POST,
        &format!("/sites/{}/bans", shop.key),
        &shop.moderator,
        Some(json!({"ip_hash": ip_hash, "duration_secs": 600})),
    )
    .await;
    assert_error(
        join_site(&app, &shop.key, "NewName", Some("198.51.100.7")).await,
        403,
        ErrorCode::Banned,
    )
    .await;
    assert_eq!(
        join_site(&app, &shop.key, "Ann", Some("198.51.100.8"))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn slow_mode_and_the_word_filter_apply_to_every_send() {
    let app = moderated_app().await;
    let shop = create_site(&app).await;
    let set = admin_json(
        &app,
        Method::PUT,
        &format!("/sites/{}/moderation", shop.key),
        &shop.moderator,
        Some(json!({"slow_mode_secs": 60, "word_filter": {"mode": "mask", "words": ["darn"]}})),
    )
    .await;
    assert_eq!(set["site"]["slow_mode_secs"], 60);
    let ann = joined(&app, &shop.key, "Ann").await;
    let first = send_as(&app, &ann, "s1", "Oh DARN it", None).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: SendResponse = first.json().await.expect("sent");
    assert_eq!(first.message.body, "Oh **** it", "masked");
    let again = send_as(&app, &ann, "s2", "second", None).await;
    let retry_after: u64 = header(&again, "retry-after").parse().expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_error(again, 429, ErrorCode::SlowMode).await;
    assert_eq!(
        send_as(&app, &ann, "s1", "Oh DARN it", None).await.status(),
        StatusCode::OK,
        "a retry of the admitted message is not slowed"
    );
    let bob = joined(&app, &shop.key, "Bob").await;
    assert_eq!(
        send_as(&app, &bob, "b1", "hi", None).await.status(),
        StatusCode::CREATED,
        "per guest"
    );
    admin_json(
        &app,
        Method::PUT,
        &format!("/sites/{}/moderation", shop.key),
        &shop.moderator,
        Some(json!({"slow_mode_secs": 0, "word_filter": {"mode": "reject", "words": ["darn"]}})),
    )
    .await;
    assert_error(
        send_as(&app, &bob, "b2", "d\u{430}rn", None).await,
        400,
        ErrorCode::WordFiltered,
    )
    .await;
    assert_eq!(
        send_as(&app, &bob, "b3", "darning socks", None)
            .await
            .status(),
        StatusCode::CREATED,
        "whole words only"
    );
    assert_error(
        admin_call(
            &app,
            Method::PUT,
            &format!("/sites/{}/moderation", shop.key),
            &shop.moderator,
            Some(json!({"slow_mode_secs": 999_999})),
        )
        .await,
        400,
        ErrorCode::InvalidRequest,
    )
    .await;
}

#[tokio::test]
async fn links_repeats_and_buckets_are_limited() {
    let app = spawn_app_with(|s| {
        s.admin.operator_token = chatty_web::settings::Secret::new(OPERATOR);
        s.limits.max_links_per_message = 2;
        s.limits.repeat_window_secs = 30;
        s.limits.ip_sends_per_minute = 1;
        s.limits.ip_burst = 3;
    })
    .await;
    let shop = create_site(&app).await;
    let ann: JoinResponse = join_site(&app, &shop.key, "Ann", Some("203.0.113.1"))
        .await
        .json()
        .await
        .expect("join");
    let bob: JoinResponse = join_site(&app, &shop.key, "Bob", Some("203.0.113.1"))
        .await
        .json()
        .await
        .expect("join");
    let cat: JoinResponse = join_site(&app, &shop.key, "Cat", Some("203.0.113.2"))
        .await
        .json()
        .await
        .expect("join");
    let ip = Some("203.0.113.1");
    assert_error(
        send_as(
            &app,
            &ann,
            "l1",
            "see https://a.example www.b.example c.com/x",
            ip,
        )
        .await,
        400,
        ErrorCode::TooManyLinks,
    )
    .await;
    assert_eq!(
        send_as(&app, &ann, "r1", "buy now", ip).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        send_as(&app, &ann, "r1", "buy now", ip).await.status(),
        StatusCode::OK,
        "a retry is no repeat"
    );
    assert_error(
        send_as(&app, &ann, "r2", "BUY  now", ip).await,
        429,
        ErrorCode::RepeatedMessage,
    )
    .await;
    // The address's burst of 3 is shared by its guests (the retry took one).
    assert_eq!(
        send_as(&app, &bob, "b1", "hello", ip).await.status(),
        StatusCode::CREATED
    );
    let limited = send_as(&app, &bob, "b2", "hello again", ip).await;
    assert!(!header(&limited, "retry-after").is_empty());
    assert_error(limited, 429, ErrorCode::RateLimited).await;
    // A retry of a message already stored is answered with it, limits or not.
    let retried = send_as(&app, &bob, "b1", "hello", ip).await;
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: SendResponse = retried.json().await.expect("retry answer");
    assert!(!retried.created);
    assert_eq!(retried.message.body, "hello");
    assert_eq!(
        send_as(&app, &cat, "c1", "another address", Some("203.0.113.2"))
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn reserved_and_look_alike_nicknames_are_refused_but_a_guest_keeps_its_own() {
    let app = moderated_app().await;
    let shop = create_site(&app).await;
    for reserved in ["admin", "Moderator", "SiteAdmin"] {
        assert_error(
            join_site(&app, &shop.key, reserved, None).await,
            400,
            ErrorCode::NicknameReserved,
        )
        .await;
    }
    let ann = joined(&app, &shop.key, "Ann").await;
    for look_alike in ["ann", "\u{410}nn", "A n n"] {
        assert_error(
            join_site(&app, &shop.key, look_alike, None).await,
            409,
            ErrorCode::NicknameTaken,
        )
        .await;
    }
    let rejoin = app
        .client
        .post(app.url("/api/v1/join"))
        .header("Origin", ORIGIN)
        .json(&json!({"site_key": shop.key, "nickname": "Ann", "token": ann.token}))
        .send()
        .await
        .expect("join");
    assert_eq!(
        rejoin.status(),
        StatusCode::OK,
        "Ann rejoining is not impersonating Ann"
    );
    assert_eq!(
        join_site(&app, &shop.key, "Anna", None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_admin_exports_a_room_without_ip_hashes_or_deleted_messages() {
    let app = moderated_app().await;
    let shop = create_site(&app).await;
    let ann = joined(&app, &shop.key, "Ann").await;
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        sent(&app, &ann, &format!("e{i}"), text).await;
    }
    admin_json(
        &app,
        Method::DELETE,
        &format!("/sites/{}/rooms/{}/messages/2", shop.key, ann.room.id),
        &shop.moderator,
        None,
    )
    .await;
    let path = format!("/sites/{}/rooms/{}/export", shop.key, ann.room.id);
    assert_error(
        admin_call(&app, Method::GET, &path, &shop.moderator, None).await,
        403,
        ErrorCode::Forbidden,
    )
    .await;
    let export = admin_json(&app, Method::GET, &path, &shop.admin, None).await;
    assert_eq!(export["site"], shop.key.as_str());
    assert_eq!(export["complete"], true);
    let bodies: Vec<&str> = export["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["one", "three"]);
    assert!(!export.to_string().contains("ip_hash"));
}

#[tokio::test]
async fn the_moderation_page_is_served_under_a_strict_csp_and_may_not_be_framed() {
    let app = moderated_app().await;
    for (path, kind) in [
        ("/admin", "text/html"),
        ("/admin.js", "text/javascript"),
        ("/admin.css", "text/css"),
    ] {
        let response = app.client.get(app.url(path)).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            header(&response, "content-type").starts_with(kind),
            "{path}"
        );
        let csp = header(&response, "content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(header(&response, "x-frame-options"), "DENY");
    }
}

#[tokio::test]
async fn the_site_command_creates_a_site_that_visitors_can_join_and_disables_it() {
    let app = moderated_app().await;
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatty"))
            .args(args)
            .env("CHATTY__DATABASE__URL", &app.db.db.url)
            .env("CHATTY__DEMO__ENABLED", "false")
            .env_remove("CHATTY_CONFIG")
            .output()
            .expect("run chatty site");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let created: Value = serde_json::from_str(&run(&[
        "site", "create", "--name", "Blog", "--origin", ORIGIN, "--json",
    ]))
    .expect("JSON");
    let key = created["site"]["key"].as_str().expect("key").to_owned();
    let admin = created["admin_token"].as_str().expect("token");
    assert!(created["snippet"].as_str().expect("snippet").contains(&key));
    assert_eq!(joined(&app, &key, "Ann").await.room.page, None);
    // The admin token works on the API at once.
    let site = admin_json(&app, Method::GET, &format!("/sites/{key}"), admin, None).await;
    assert_eq!(site["site"]["name"], "Blog");
    assert!(run(&["site", "list"]).contains(&key));
    let moderator_out = run(&["site", "token", &key, "--label", "Bea"]);
    let moderator = moderator_out
        .split_whitespace()
        .find(|w| w.starts_with("chatty_mod_"))
        .expect("printed");
    assert_eq!(
        admin_call(
            &app,
            Method::GET,
            &format!("/sites/{key}/bans"),
            moderator,
            None
        )
        .await
        .status(),
        StatusCode::OK
    );
    run(&["site", "disable", &key]);
    // A node that reads the site now finds it disabled (this one may hold a
    // cached copy for up to 30 s in the embedded mode).
    let fresh = crate::helpers::spawn_node(std::sync::Arc::clone(&app.db), |_| {}).await;
    assert_error(
        join_site(&fresh, &key, "Bob", None).await,
        403,
        ErrorCode::SiteDisabled,
    )
    .await;
    let audit = admin_json(
        &app,
        Method::GET,
        &format!("/sites/{key}/audit"),
        admin,
        None,
    )
    .await;
    let actions: Vec<&str> = audit["actions"]
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(actions, vec!["update_site", "create_token", "create_site"]);
}

#[tokio::test]
async fn the_retention_sweep_deletes_old_messages_only() {
    let app = moderated_app().await;
    let shop = create_site(&app).await;
    let ann = joined(&app, &shop.key, "Ann").await;
    sent(&app, &ann, "x1", "recent").await;
    let kept = chatty_web::retention::sweep(app.state.admin.as_ref(), 1)
        .await
        .expect("sweep");
    assert_eq!(kept, 0, "nothing is a day old");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let deleted = chatty_web::retention::sweep(app.state.admin.as_ref(), 0)
        .await
        .expect("sweep");
    assert!(
        deleted >= 1,
        "a zero-day sweep deletes what was sent before it"
    );
    let export = admin_json(
        &app,
        Method::GET,
        &format!("/sites/{}/rooms/{}/export", shop.key, ann.room.id),
        &shop.admin,
        None,
    )
    .await;
    assert_eq!(export["messages"], json!([]));
    // A node that loads the emptied room goes on from its counter: the next
    // message is delivered (it used to wait for ever for the deleted seqs).
    let fresh = crate::helpers::spawn_node(std::sync::Arc::clone(&app.db), |s| {
        s.admin.operator_token = chatty_web::settings::Secret::new(OPERATOR)
    })
    .await;
    let bob = joined(&fresh, &shop.key, "Bob").await;
    let seq = sent(&fresh, &bob, "x2", "after the sweep").await;
    assert_eq!(seq, 2, "numbering continues");
    let mut seen = Vec::new();
    for _ in 0..40 {
        let poll: PollResponse = fresh
            .poll(&bob, &bob.cursor.to_string(), None)
            .await
            .json()
            .await
            .expect("poll");
        seen = message_seqs(&poll);
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, vec![2]);
}
