//! # flow-bridge-adapter
//!
//! Write a flow-bridge plugin handler as a plain Rust function. flow-bridge starts your
//! program as a long-lived child process and talks to it with msgpack frames over its
//! stdin/stdout; this crate speaks that protocol (SPEC.md, version 1), runs your handler
//! for each request on a thread pool, and turns its `Ok`/`Err` (or a panic) into the
//! one answer each request needs.
//!
//! ```no_run
//! use flow_bridge_adapter::{HandlerError, Plugin, Task};
//! use serde_json::json;
//!
//! fn main() {
//!     Plugin::new(|task: &Task| -> Result<_, HandlerError> {
//!         let cfg = task.config().ok_or_else(|| HandlerError::new("config is not JSON"))?;
//!         let name = cfg["name"].as_str().unwrap_or("world");
//!         task.log().info(format!("greeting {name}"));
//!         Ok(json!({ "greeting": format!("hello, {name}") }))
//!     })
//!     .name("greeter")
//!     .version("1.0")
//!     .serve();
//! }
//! ```
//!
//! Once [`Plugin::serve`] runs, stdout is no longer the protocol channel: `println!`
//! and child processes' output go to stderr, which the bridge copies to its log.

use std::sync::{Arc, Mutex};

// The codec (msgpack, protocol) is internal: only the types that appear in the public
// API are re-exported below. The tests that play the bridge with it live in src/tests.
mod fdio;
mod msgpack;
mod outbox;
mod plugin;
mod protocol;
mod task;
mod value;

#[cfg(test)]
mod tests;

pub use plugin::{logger, HandlerError, IntoReply, Plugin, Reply, ServeError};
pub use protocol::{ErrorKind, Hello, Level, PluginType, ProtocolError};
pub use task::{CancelToken, Cancelled, Logger, Task};
pub use value::Value;

/// Re-exported so that handlers can write `flow_bridge_adapter::json!({...})`.
pub use serde_json::json;

static GLOBAL_OUTBOX: Mutex<Option<Arc<outbox::Outbox>>> = Mutex::new(None);

fn set_global_outbox(out: Option<Arc<outbox::Outbox>>) {
    *GLOBAL_OUTBOX.lock().unwrap_or_else(|e| e.into_inner()) = out;
}

fn global_outbox() -> Option<Arc<outbox::Outbox>> {
    GLOBAL_OUTBOX
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
