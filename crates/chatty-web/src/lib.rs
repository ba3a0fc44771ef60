//! # chatty-web
//!
//! The Chatty web node: a stateless actix-web server. Layout:
//!
//! * [`startup`] — [`Application::build`] and `run_until`, used by `main` and tests;
//! * [`settings`] — the typed configuration;
//! * [`routes`] — one file per endpoint, thin;
//! * [`hub`] — this node's in-memory room state (versions, message window,
//!   presence): what makes polls cheap;
//! * [`directory`] — cached site/room lookups for joins;
//! * [`cors`] — cross-origin access for the widget;
//! * [`token`] — signed guest tokens;
//! * [`error`] — the JSON error body;
//! * [`metrics`], [`telemetry`] — Prometheus and tracing.

pub mod admin;
pub mod cli;
pub mod client_ip;
pub mod connections;
pub mod cors;
pub mod directory;
pub mod error;
pub mod fanout;
pub mod hub;
pub mod metrics;
pub mod moderation;
pub mod retention;
pub mod routes;
pub mod settings;
pub mod sse;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod token;
pub mod websocket;

pub use settings::Settings;
pub use startup::Application;
