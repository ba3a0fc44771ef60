//! sea-orm entities. Private to this crate: the wire and domain types are
//! mapped explicitly, so a new column never leaks into the API.

pub mod ban;
pub mod message;
pub mod meta;
pub mod moderation_action;
pub mod room;
pub mod site;
pub mod site_token;
