//! # chatty-protocol
//!
//! Everything a Chatty client and server agree on, and nothing else: the JSON
//! request/response bodies of HTTP API v1 ([`api`]), the events a room emits
//! ([`event`]), the poll cursor that doubles as the room's `ETag`
//! ([`cursor`]), the stable error codes ([`error`]) and the parsing newtypes
//! that turn untrusted input into values the rest of the system can trust
//! ([`validate`]).
//!
//! The crate deliberately depends on serde (and a Unicode normaliser) only, so
//! the widget, the bench suite and any future client can use it without
//! pulling in a web framework or a database driver. The test command checks
//! this with `cargo tree`.

pub mod api;
pub mod cursor;
pub mod error;
pub mod event;
pub mod moderation;
pub mod validate;

pub use cursor::{CursorError, RoomCursor};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::{Event, LeaveReason, Member, MessageView, ResetReason};
