//! Black-box tests of the HTTP API against a real node (see `helpers`).
//! Run: `cargo test -p chatty-web --test api` (SQLite) or with
//! `CHATTY_TEST_BACKEND=mysql` (MariaDB).

mod assets;
mod chat;
// Shared with the cluster suite, which uses more of it.
#[allow(dead_code)]
mod helpers;
mod moderation;
mod presence;
mod push;
#[path = "../common/push.rs"]
mod push_client;
mod validation;
