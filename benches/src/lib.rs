//! The bench suite's library: load scenarios, the visitor simulator that
//! runs them and the server-side figures read from `/metrics`. The binary
//! (`chatty-bench`) is its command line; the tests drive it directly.

pub mod chart;
pub mod run;
pub mod scenario;
pub mod server;
