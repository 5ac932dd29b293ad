//! The {{name}} plugin's handler, written with flow-bridge's Rust adapter.
//!
//! flow-bridge starts this program once and sends it every task; the closure answers
//! each, on a pool of threads. Return `Ok` with the task's result data, or `Err` (a failed
//! task whose message the flow shows). `println!` is safe: the adapter sends stdout to the log.

use flow_bridge_adapter::{json, HandlerError, Plugin, Request};

fn execute(request: &Request) -> Result<serde_json::Value, HandlerError> {
    // The flow node's configuration, parsed as JSON.
    let config = request
        .config()
        .filter(|c| c.is_object())
        .ok_or_else(|| HandlerError::new("the node's config must be a JSON object"))?;
    let name = match config.get("name") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "world".to_owned(),
    };
    request.log().info(format!("greeting {name}")); // a log line tied to this task
    Ok(json!({ "greeting": format!("hello, {name}") }))
}

fn main() {
    Plugin::new(execute)
        .debug(true) // the same function answers the flow editor's debug runs
        .name("{{name}}")
        .serve(); // returns after `stop` or end of input: main ends with status 0
}
