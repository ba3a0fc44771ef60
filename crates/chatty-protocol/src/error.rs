//! Stable error codes and the JSON error body every rejection carries.
//!
//! Codes are part of the public API: clients switch on them, so a code is
//! never renamed once shipped. The HTTP status belongs to the code, so the
//! server cannot answer the same condition with two different statuses.

use serde::{Deserialize, Serialize};

/// Every error code Chatty can return. Serialised in `snake_case`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request body is not valid JSON or does not match the expected shape.
    MalformedJson,
    /// A query string parameter is missing or malformed.
    InvalidQuery,
    /// A path parameter (such as a room id) is malformed.
    InvalidPath,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// The request body is not `application/json`.
    UnsupportedMediaType,
    /// No such route.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// No `Authorization: Bearer` token was sent.
    MissingToken,
    /// The guest token is malformed, forged or signed with another secret.
    InvalidToken,
    /// The guest token has expired: join again.
    TokenExpired,
    /// The guest token belongs to another room.
    WrongRoom,
    /// The `Origin` of the request is not one of the site's allowed origins.
    OriginNotAllowed,
    /// No site has this key.
    UnknownSite,
    /// The site exists but is disabled.
    SiteDisabled,
    /// The site key is malformed.
    InvalidSiteKey,
    /// The room does not exist.
    UnknownRoom,
    /// The nickname is empty after trimming.
    NicknameEmpty,
    /// The nickname is longer than 32 characters.
    NicknameTooLong,
    /// The nickname contains control, bidi-override or invisible characters.
    NicknameInvalid,
    /// The message body is empty after trimming.
    BodyEmpty,
    /// The message body is longer than the configured maximum.
    BodyTooLong,
    /// The message body contains control, bidi-override or invisible-run characters.
    BodyInvalid,
    /// The client message id is missing or malformed.
    InvalidClientMessageId,
    /// The page path for a page-scoped room is malformed.
    InvalidPage,
    /// The poll cursor is malformed.
    InvalidCursor,
    /// Too many requests of this kind from this guest: wait `Retry-After` seconds.
    RateLimited,
    /// A store (database) did not answer in time or is down; retry later.
    StoreUnavailable,
    /// The message bus (Redis) did not answer in time or is down; retry later.
    BusUnavailable,
    /// A WebSocket endpoint was asked without a valid WebSocket handshake
    /// (`Upgrade: websocket`, version 13, a key).
    NotWebsocket,
    /// This node holds as many push connections as it is configured to:
    /// connect to another node, or retry after `Retry-After`.
    NodeFull,
    /// This address holds as many push connections as one address may.
    TooManyConnections,
    /// The node is shutting down: connect to another node.
    Draining,
    /// The guest (by guest id or IP address) is banned from this site.
    Banned,
    /// The site has slow mode on: wait `Retry-After` seconds between messages.
    SlowMode,
    /// The same text was just sent: repeated messages are refused (flood).
    RepeatedMessage,
    /// The message has more links than the server allows.
    TooManyLinks,
    /// The message contains a word the site filters (reject mode).
    WordFiltered,
    /// Someone in the room already uses this nickname, or one that looks like it.
    NicknameTaken,
    /// The nickname is reserved ("admin", "moderator", …).
    NicknameReserved,
    /// Admin API: this token may not do that (another site, or too small a role).
    Forbidden,
    /// Admin API: no such message.
    UnknownMessage,
    /// Admin API: a field of the request is malformed; the message says which.
    InvalidRequest,
    /// Something failed inside the server. The cause is logged, never sent.
    InternalError,
}

impl ErrorCode {
    /// The HTTP status code that goes with this error.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MalformedJson
            | InvalidQuery
            | InvalidPath
            | InvalidSiteKey
            | NicknameEmpty
            | NicknameTooLong
            | NicknameInvalid
            | BodyEmpty
            | BodyTooLong
            | BodyInvalid
            | InvalidClientMessageId
            | InvalidPage
            | InvalidCursor
            | NotWebsocket
            | TooManyLinks
            | WordFiltered
            | NicknameReserved
            | InvalidRequest => 400,
            MissingToken | InvalidToken | TokenExpired => 401,
            WrongRoom | OriginNotAllowed | SiteDisabled | Banned | Forbidden => 403,
            NotFound | UnknownSite | UnknownRoom | UnknownMessage => 404,
            NicknameTaken => 409,
            MethodNotAllowed => 405,
            PayloadTooLarge => 413,
            RateLimited | TooManyConnections | SlowMode | RepeatedMessage => 429,
            UnsupportedMediaType => 415,
            InternalError => 500,
            StoreUnavailable | BusUnavailable | NodeFull | Draining => 503,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedJson => "malformed_json",
            InvalidQuery => "invalid_query",
            InvalidPath => "invalid_path",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            MissingToken => "missing_token",
            InvalidToken => "invalid_token",
            TokenExpired => "token_expired",
            WrongRoom => "wrong_room",
            OriginNotAllowed => "origin_not_allowed",
            UnknownSite => "unknown_site",
            SiteDisabled => "site_disabled",
            InvalidSiteKey => "invalid_site_key",
            UnknownRoom => "unknown_room",
            NicknameEmpty => "nickname_empty",
            NicknameTooLong => "nickname_too_long",
            NicknameInvalid => "nickname_invalid",
            BodyEmpty => "body_empty",
            BodyTooLong => "body_too_long",
            BodyInvalid => "body_invalid",
            InvalidClientMessageId => "invalid_client_message_id",
            InvalidPage => "invalid_page",
            InvalidCursor => "invalid_cursor",
            RateLimited => "rate_limited",
            StoreUnavailable => "store_unavailable",
            BusUnavailable => "bus_unavailable",
            NotWebsocket => "not_websocket",
            NodeFull => "node_full",
            TooManyConnections => "too_many_connections",
            Draining => "draining",
            Banned => "banned",
            SlowMode => "slow_mode",
            RepeatedMessage => "repeated_message",
            TooManyLinks => "too_many_links",
            WordFiltered => "word_filtered",
            NicknameTaken => "nickname_taken",
            NicknameReserved => "nickname_reserved",
            Forbidden => "forbidden",
            UnknownMessage => "unknown_message",
            InvalidRequest => "invalid_request",
            InternalError => "internal_error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error":{"code":"…","message":"…"}}`: the body of every 4xx and 5xx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// A human-readable explanation, safe to show to the visitor.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde_name() {
        use ErrorCode::*;
        for code in [
            MalformedJson,
            InvalidQuery,
            InvalidPath,
            PayloadTooLarge,
            UnsupportedMediaType,
            NotFound,
            MethodNotAllowed,
            MissingToken,
            InvalidToken,
            TokenExpired,
            WrongRoom,
            OriginNotAllowed,
            UnknownSite,
            SiteDisabled,
            InvalidSiteKey,
            UnknownRoom,
            NicknameEmpty,
            NicknameTooLong,
            NicknameInvalid,
            BodyEmpty,
            BodyTooLong,
            BodyInvalid,
            InvalidClientMessageId,
            InvalidPage,
            InvalidCursor,
            RateLimited,
            StoreUnavailable,
            BusUnavailable,
            NotWebsocket,
            NodeFull,
            TooManyConnections,
            Draining,
            Banned,
            SlowMode,
            RepeatedMessage,
            TooManyLinks,
            WordFiltered,
            NicknameTaken,
            NicknameReserved,
            Forbidden,
            UnknownMessage,
            InvalidRequest,
            InternalError,
        ] {
            let json = serde_json::to_string(&code).expect("serialises");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let status = code.http_status();
            assert!((400..600).contains(&status), "{code} has status {status}");
        }
    }

    #[test]
    fn error_body_has_documented_shape() {
        let body = ErrorBody::new(ErrorCode::BodyEmpty, "empty");
        let json = serde_json::to_value(&body).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "body_empty", "message": "empty"}})
        );
    }
}
