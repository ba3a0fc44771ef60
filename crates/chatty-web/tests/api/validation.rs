//! Every validation rule and malformed request gets its documented 4xx code
//! and JSON body; none is a 500, and the node keeps serving.

use chatty_protocol::ErrorCode;
use chatty_storage::NewSite;
use chatty_web::token::{GuestClaims, TokenKey};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TEST_SECRET, assert_error, spawn_app};

#[tokio::test]
async fn join_input_rules_each_have_their_code() {
    let app = spawn_app().await;
    let long_page = format!("/{}", "a".repeat(300));
    let cases = [
        (
            json!({"site_key": "demo", "nickname": "   "}),
            400,
            ErrorCode::NicknameEmpty,
        ),
        (
            json!({"site_key": "demo", "nickname": "x".repeat(33)}),
            400,
            ErrorCode::NicknameTooLong,
        ),
        (
            json!({"site_key": "demo", "nickname": "evil\u{202E}gpj.exe"}),
            400,
            ErrorCode::NicknameInvalid,
        ),
        (
            json!({"site_key": "demo", "nickname": "a\u{0000}b"}),
            400,
            ErrorCode::NicknameInvalid,
        ),
        (
            json!({"site_key": "demo", "nickname": "two\nlines"}),
            400,
            ErrorCode::NicknameInvalid,
        ),
        (
            json!({"site_key": "demo", "nickname": "a\u{200D}\u{200D}b"}),
            400,
            ErrorCode::NicknameInvalid,
        ),
        (
            json!({"site_key": "no such site", "nickname": "Ann"}),
            400,
            ErrorCode::InvalidSiteKey,
        ),
        (
            json!({"site_key": "nosuchsite", "nickname": "Ann"}),
            404,
            ErrorCode::UnknownSite,
        ),
        (
            json!({"site_key": "demo", "nickname": "Ann", "page": "relative"}),
            400,
            ErrorCode::InvalidPage,
        ),
        (
            json!({"site_key": "demo", "nickname": "Ann", "page": long_page}),
            400,
            ErrorCode::InvalidPage,
        ),
        (json!({"site_key": "demo"}), 400, ErrorCode::MalformedJson),
        (
            json!({"site_key": "demo", "nickname": 5}),
            400,
            ErrorCode::MalformedJson,
        ),
        (
            json!({"site_key": "demo", "nickname": "Ann", "admin": true}),
            400,
            ErrorCode::MalformedJson,
        ),
        (
            json!(["not", "an", "object"]),
            400,
            ErrorCode::MalformedJson,
        ),
    ];
    for (body, status, code) in cases {
        assert_error(app.join_raw(&body).await, status, code).await;
    }
}

#[tokio::test]
async fn nicknames_are_normalised_and_invisible_characters_stripped() {
    let app = spawn_app().await;
    let joined = app.join("  Rene\u{0301}\u{200B}  ").await;
    assert_eq!(joined.guest.nickname, "René");
}

#[tokio::test]
async fn send_input_rules_each_have_their_code() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let too_long = "x".repeat(2001);
    let zalgo = format!("Z{}", "\u{0336}".repeat(30));
    let cases = [
        (
            json!({"client_message_id": "a", "body": " \n\t "}),
            400,
            ErrorCode::BodyEmpty,
        ),
        (
            json!({"client_message_id": "b", "body": too_long}),
            400,
            ErrorCode::BodyTooLong,
        ),
        (
            json!({"client_message_id": "c", "body": "hi\u{202E}there"}),
            400,
            ErrorCode::BodyInvalid,
        ),
        (
            json!({"client_message_id": "d", "body": "bell\u{0007}"}),
            400,
            ErrorCode::BodyInvalid,
        ),
        (
            json!({"client_message_id": "e", "body": zalgo}),
            400,
            ErrorCode::BodyInvalid,
        ),
        (
            json!({"client_message_id": "", "body": "hi"}),
            400,
            ErrorCode::InvalidClientMessageId,
        ),
        (
            json!({"client_message_id": "has space", "body": "hi"}),
            400,
            ErrorCode::InvalidClientMessageId,
        ),
        (
            json!({"client_message_id": "x".repeat(65), "body": "hi"}),
            400,
            ErrorCode::InvalidClientMessageId,
        ),
        (json!({"body": "hi"}), 400, ErrorCode::MalformedJson),
        (
            json!({"client_message_id": "f", "body": null}),
            400,
            ErrorCode::MalformedJson,
        ),
    ];
    let path = format!("/api/v1/rooms/{}/messages", ann.room.id);
    for (body, status, code) in cases {
        assert_error(
            app.post_json(&path, &body, Some(&ann.token)).await,
            status,
            code,
        )
        .await;
    }
    // 2000 characters of 4-byte emoji is within the limit.
    let emoji = "😀".repeat(2000);
    assert_eq!(
        app.send(&ann, "g", &emoji).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn malformed_requests_get_4xx_json_errors() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let join = app.url("/api/v1/join");
    let send = app.url(&format!("/api/v1/rooms/{}/messages", ann.room.id));
    let events = app.url(&format!("/api/v1/rooms/{}/events", ann.room.id));
    let c = &app.client;

    let raw = |url: &str, body: Vec<u8>, content_type: &str| {
        c.post(url)
            .header("content-type", content_type.to_owned())
            .bearer_auth(&ann.token)
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, ErrorCode)> = vec![
        (
            raw(&join, b"{not json".to_vec(), "application/json"),
            400,
            ErrorCode::MalformedJson,
        ),
        (
            raw(
                &join,
                vec![0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d],
                "application/json",
            ),
            400,
            ErrorCode::MalformedJson,
        ),
        (
            raw(
                &join,
                format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
                "application/json",
            ),
            400,
            ErrorCode::MalformedJson,
        ),
        (
            raw(&join, vec![b' '; 40 * 1024], "application/json"),
            413,
            ErrorCode::PayloadTooLarge,
        ),
        (
            raw(
                &send,
                format!(
                    "{{\"client_message_id\":\"a\",\"body\":\"{}\"}}",
                    "x".repeat(1024 * 1024)
                )
                .into_bytes(),
                "application/json",
            ),
            413,
            ErrorCode::PayloadTooLarge,
        ),
        (
            raw(
                &join,
                b"site_key=demo".to_vec(),
                "application/x-www-form-urlencoded",
            ),
            415,
            ErrorCode::UnsupportedMediaType,
        ),
        (
            raw(&send, b"".to_vec(), "application/json"),
            400,
            ErrorCode::MalformedJson,
        ),
        (
            c.get(&events).bearer_auth(&ann.token),
            400,
            ErrorCode::InvalidQuery,
        ),
        (
            c.get(&events)
                .query(&[("cursor", "garbage")])
                .bearer_auth(&ann.token),
            400,
            ErrorCode::InvalidCursor,
        ),
        (
            c.get(app.url("/api/v1/rooms/abc/events"))
                .query(&[("cursor", "0.0.0")])
                .bearer_auth(&ann.token),
            400,
            ErrorCode::InvalidPath,
        ),
        (
            c.get(&events).query(&[("cursor", "0.0.0")]),
            401,
            ErrorCode::MissingToken,
        ),
        (
            c.get(&events)
                .query(&[("cursor", "0.0.0")])
                .header("authorization", "Basic abc"),
            401,
            ErrorCode::MissingToken,
        ),
        (
            c.get(&events)
                .query(&[("cursor", "0.0.0")])
                .bearer_auth("v1.forged.token"),
            401,
            ErrorCode::InvalidToken,
        ),
        (c.get(&join), 405, ErrorCode::MethodNotAllowed),
        (
            c.delete(&send).bearer_auth(&ann.token),
            405,
            ErrorCode::MethodNotAllowed,
        ),
        (c.get(app.url("/no/such/thing")), 404, ErrorCode::NotFound),
    ];
    for (request, status, code) in cases {
        assert_error(request.send().await.expect("sent"), status, code).await;
    }
    // After all that, the node still serves.
    let poll = app.poll(&ann, &ann.cursor.to_string(), None).await;
    assert_eq!(poll.status(), StatusCode::OK);
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let room = ann.room.id;
    let claims = GuestClaims {
        site_id: 1,
        room_id: room,
        guest_id: "intruder".into(),
        nickname: "Ann".into(),
        expires_at: chrono::Utc::now().timestamp() - 1,
    };
    let expired = TokenKey::new(TEST_SECRET).sign(&claims);
    let forged = TokenKey::new("some other secret that is long enough!!").sign(&GuestClaims {
        expires_at: chrono::Utc::now().timestamp() + 3600,
        ..claims.clone()
    });
    let path = format!("/api/v1/rooms/{room}/messages");
    let body = json!({"client_message_id": "x", "body": "hi"});
    assert_error(
        app.post_json(&path, &body, Some(&expired)).await,
        401,
        ErrorCode::TokenExpired,
    )
    .await;
    assert_error(
        app.post_json(&path, &body, Some(&forged)).await,
        401,
        ErrorCode::InvalidToken,
    )
    .await;
    // An empty bearer token is no token.
    assert_error(
        app.post_json(&path, &body, Some("")).await,
        401,
        ErrorCode::MissingToken,
    )
    .await;
    assert_error(
        app.post_json(&path, &body, Some("v1.x.y")).await,
        401,
        ErrorCode::InvalidToken,
    )
    .await;
    // A join with a foreign token still works, as a new guest (under a
    // name of its own: "Ann" is present, and a new guest may not take it).
    let rejoined = app
        .join_raw(&json!({"site_key": "demo", "nickname": "Zed", "token": forged}))
        .await;
    assert_eq!(rejoined.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_foreign_origin_is_refused_and_an_allowed_one_accepted() {
    let app = spawn_app().await;
    app.state
        .store
        .ensure_site(NewSite {
            key: "shop".into(),
            name: "Shop".into(),
            allowed_origins: vec!["https://shop.example".into()],
        })
        .await
        .expect("site");
    let join = |origin: &'static str| {
        app.client
            .post(app.url("/api/v1/join"))
            .header("origin", origin)
            .json(&json!({"site_key": "shop", "nickname": "Ann"}))
            .send()
    };
    assert_eq!(
        join("https://shop.example").await.expect("sent").status(),
        StatusCode::OK
    );
    for foreign in [
        "https://evil-shop.example",
        "http://shop.example",
        "https://shop.example:8443",
        "https://shop.example.evil.com",
    ] {
        assert_error(
            join(foreign).await.expect("sent"),
            403,
            ErrorCode::OriginNotAllowed,
        )
        .await;
    }
}

#[tokio::test]
async fn cors_lets_the_widget_call_from_any_origin_and_leaves_other_requests_alone() {
    let app = spawn_app().await;
    let ann = app.join("Ann").await;
    let events = app.url(&format!("/api/v1/rooms/{}/events", ann.room.id));
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, &events)
        .header("origin", "https://any.example")
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization, if-none-match",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    let header =
        |r: &reqwest::Response, name: &str| crate::helpers::header(r, name).to_ascii_lowercase();
    let allowed = header(&preflight, "access-control-allow-headers");
    assert!(
        allowed.contains("authorization") && allowed.contains("if-none-match"),
        "{allowed}"
    );
    assert_eq!(header(&preflight, "access-control-allow-origin"), "*");

    let cross = app
        .client
        .get(&events)
        .query(&[("cursor", ann.cursor.to_string())])
        .bearer_auth(&ann.token)
        .header("origin", "https://any.example")
        .send()
        .await
        .expect("poll");
    assert_eq!(header(&cross, "access-control-allow-origin"), "*");
    assert!(header(&cross, "access-control-expose-headers").contains("etag"));

    let same = app.poll(&ann, &ann.cursor.to_string(), None).await;
    assert!(same.headers().get("access-control-allow-origin").is_none());
    assert!(same.headers().get("vary").is_none());
}
