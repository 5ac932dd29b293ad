//! The echo handler (SPEC.md, "The echo contract"), used by `flow-bridge conformance`.
//!
//! `ECHO_BREAK` breaks one behaviour on purpose (see SPEC.md) so that tests can show the
//! conformance suite catching it.

use std::time::Duration;

use flow_bridge_adapter::{HandlerError, Plugin, Request, Value};

fn echo(request: &Request, brk: &str) -> Result<Value, HandlerError> {
    let config = request.config().filter(|c| c.is_object());
    let i = config.and_then(|c| c.get("i"));
    if request.is_debug() {
        let text = match i {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "null".to_owned(),
        };
        request.log().info(format!("debug {text}"));
    }
    let Some(config) = config else {
        return Ok(Value::from_pairs([(
            "raw",
            Value::Bin(request.raw_config.clone()),
        )]));
    };
    if let Some(fail) = config.get("fail").and_then(|v| v.as_str()) {
        return Err(HandlerError::new(fail));
    }
    if let Some(text) = config.get("print").and_then(|v| v.as_str()) {
        println!("{text}");
    }
    if let Some(text) = config.get("log").and_then(|v| v.as_str()) {
        request.log().info(text);
    }
    if let Some(ms) = config.get("sleep_ms").and_then(|v| v.as_f64()) {
        if ms.is_finite() && ms > 0.0 {
            let dur = Duration::from_secs_f64(ms / 1000.0);
            if brk == "ignore-cancel" {
                std::thread::sleep(dur);
            } else {
                request.sleep(dur)?; // Err(Cancelled) becomes the error "cancelled"
            }
        }
    }
    let n = match config.get("payload").and_then(|v| v.as_str()) {
        Some(p) if brk == "count-bytes" => p.len(),
        Some(p) => p.chars().count(),
        None => 0,
    };
    let mut data = Value::from_pairs([("i", Value::from(i)), ("n", Value::from(n))]);
    if let Some(e) = config.get("echo") {
        data.insert("echo", e);
    }
    Ok(data)
}

fn main() {
    let brk = std::env::var("ECHO_BREAK").unwrap_or_default();
    let hang = brk == "hang-on-stop";
    let debug = brk != "no-debug";
    Plugin::new(move |request: &Request| echo(request, &brk))
        .debug(debug)
        .concurrency(64)
        .name("echo")
        .version(concat!("echo (rust) ", env!("CARGO_PKG_VERSION")))
        .on_stop(move || {
            if hang {
                loop {
                    std::thread::park();
                }
            }
        })
        .serve();
}
