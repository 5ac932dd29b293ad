//! The shared vectors of protocol/vectors.json (SPEC.md, "Test vectors").

use std::path::PathBuf;

use crate::conn::Conn;
use crate::msgpack::{self, ValueRef};
use crate::protocol::{FrameReader, Message, ReadError, DEFAULT_MAX_FRAME};
use crate::schema::Role;
use crate::ErrorKind;
use crate::Value;
use serde_json::Value as Json;

fn vectors() -> Json {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../protocol/vectors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A vector's JSON value as a msgpack value: `{"$bin": hex}` is a bin.
fn from_json(j: &Json) -> Value {
    match j {
        Json::Object(o) if o.len() == 1 && o.contains_key("$bin") => {
            Value::Bin(unhex(o["$bin"].as_str().unwrap()))
        }
        Json::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::Str(k.clone()), from_json(v)))
                .collect(),
        ),
        Json::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        other => Value::from(other.clone()),
    }
}

/// Maps compared without regard to key order (JSON objects in the vectors are sorted).
fn normalize(v: Value) -> Value {
    match v {
        Value::Map(m) => {
            let mut m: Vec<_> = m
                .into_iter()
                .map(|(k, v)| (normalize(k), normalize(v)))
                .collect();
            m.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
            Value::Map(m)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        other => other,
    }
}

fn one_frame(bytes: &[u8], max_frame: u32) -> Result<Message, ReadError> {
    let mut reader = FrameReader::new(bytes);
    reader.set_max_frame(max_frame);
    let msg = reader.next_message()?.expect("a frame");
    assert!(
        reader.next_frame().unwrap().is_none(),
        "bytes left after the frame"
    );
    Ok(msg)
}

/// The fields each message type has, with the value a receiver assumes when missing
/// (`None`: required, or absent-means-none for log.id, ready.plugin_type, error.data).
fn defaults(ty: &str) -> Vec<(&'static str, Option<Value>)> {
    let s = |x: &str| Some(Value::from(x));
    match ty {
        "hello" => vec![
            ("protocols", None),
            ("plugin", None),
            ("plugin_type", s("service")),
            ("max_frame", Some(Value::from(DEFAULT_MAX_FRAME))),
            ("bridge", s("")),
        ],
        "ready" => vec![
            ("protocol", None),
            ("concurrency", Some(Value::from(1))),
            ("debug", Some(Value::Bool(false))),
            ("name", s("")),
            ("version", s("")),
            ("plugin_type", None),
        ],
        "task" | "debug" => {
            let mut v = vec![
                ("id", None),
                ("config", None),
                ("project_id", s("")),
                ("flow_id", s("")),
                ("job", s("")),
                ("element_id", s("")),
                ("element_job", s("")),
                ("timeout_ms", Some(Value::from(0))),
            ];
            if ty == "debug" {
                v.retain(|(k, _)| *k != "job");
            }
            v
        }
        "result" => vec![
            ("id", None),
            ("data", Some(Value::map())),
            ("message", s("")),
            ("detail", s("")),
        ],
        "error" => vec![
            ("id", None),
            ("message", None),
            ("detail", s("")),
            ("data", None),
        ],
        "log" => vec![
            ("level", None),
            ("msg", None),
            ("id", None),
            ("time", s("")),
        ],
        "cancel" => vec![("id", None), ("reason", s("timeout"))],
        "state" => vec![("connected", None)],
        "stop" => vec![],
        other => panic!("no defaults for {other}"),
    }
}

/// The message re-encoded (canonical form) and decoded as a plain value.
fn as_value(msg: &Message) -> Value {
    let mut body = Vec::new();
    msg.encode_body(&mut body);
    msgpack::decode(&body).unwrap().to_owned_value()
}

#[test]
fn valid_vectors_decode_to_their_value() {
    let v = vectors();
    let mut count = 0;
    for vec in v["valid"].as_array().unwrap() {
        let name = vec["name"].as_str().unwrap();
        let frame = unhex(vec["hex"].as_str().unwrap());
        let want = from_json(&vec["value"]);

        // The raw msgpack value is exactly the vector's value.
        let body = &frame[4..];
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            body.len(),
            "{name}"
        );
        let raw = msgpack::decode(body)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
            .to_owned_value();
        assert_eq!(normalize(raw), normalize(want.clone()), "{name}: raw value");

        // The typed message has every field the vector has, and defaults for the rest.
        let msg = one_frame(&frame, DEFAULT_MAX_FRAME).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ty = want.get("type").and_then(Value::as_str).unwrap();
        assert_eq!(msg.type_name(), ty, "{name}");
        let got = as_value(&msg);
        for (field, default) in defaults(ty) {
            let expected = want.get(field).cloned().or(default);
            assert_eq!(got.get(field).cloned(), expected, "{name}: field {field}");
        }
        count += 1;
    }
    assert!(count >= 20, "only {count} valid vectors");
}

#[test]
fn canonical_vectors_encode_byte_for_byte() {
    let v = vectors();
    let mut to_bridge = 0;
    for vec in v["valid"].as_array().unwrap() {
        if vec["canonical"] != Json::Bool(true) {
            continue;
        }
        let name = vec["name"].as_str().unwrap();
        let want = unhex(vec["hex"].as_str().unwrap());
        // Build the message from the vector's value (not from its bytes), then encode.
        let value = from_json(&vec["value"]);
        let msg = Message::from_value_ref(&ValueRef::from_value(&value))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = msg.to_frame();
        assert_eq!(hex(&got), hex(&want), "{name}: canonical encoding");
        if vec["direction"] == "to_bridge" {
            to_bridge += 1;
        }
    }
    assert!(
        to_bridge >= 5,
        "only {to_bridge} canonical to_bridge vectors"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn invalid_vectors_fail_with_their_kind() {
    let v = vectors();
    let mut count = 0;
    for vec in v["invalid"].as_array().unwrap() {
        let name = vec["name"].as_str().unwrap();
        let bytes = unhex(vec["hex"].as_str().unwrap());
        let max_frame = vec
            .get("max_frame")
            .and_then(Json::as_u64)
            .unwrap_or(DEFAULT_MAX_FRAME as u64);
        let want = vec["error"].as_str().unwrap();
        let mut reader = FrameReader::new(&bytes[..]);
        reader.set_max_frame(max_frame as u32);
        match reader.next_message() {
            Err(ReadError::Protocol(e)) => {
                assert_eq!(e.kind.as_str(), want, "{name}: {}", e.message)
            }
            other => panic!("{name}: expected error {want}, got {other:?}"),
        }
        count += 1;
    }
    assert!(count >= 20, "only {count} invalid vectors");
}

#[test]
fn frames_split_into_single_bytes_still_decode() {
    struct Trickle<'a>(&'a [u8]);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }
    let v = vectors();
    let mut all = Vec::new();
    let mut want = Vec::new();
    for vec in v["valid"].as_array().unwrap() {
        let frame = unhex(vec["hex"].as_str().unwrap());
        want.push(Message::decode(&frame[4..]).unwrap());
        all.extend(frame);
    }
    let mut reader = FrameReader::new(Trickle(&all));
    for w in want {
        assert_eq!(reader.next_message().unwrap().unwrap(), w);
    }
    assert!(reader.next_message().unwrap().is_none());
}

/// Every sequence, replayed on a bridge and a child `Conn` at once: the sender must agree
/// to send each frame (or refuse it with the step's kind, changing nothing), the receiver
/// must take it (or reject it with that kind). `serve::the_bridge_errors_of_the_sequences_end_serve`
/// checks the serve loop, which holds a child `Conn`.
#[test]
fn sequences_replay_on_both_sides() {
    let v = vectors();
    let sequences = v["sequences"].as_array().unwrap();
    assert!(!sequences.is_empty());
    for seq in sequences {
        let name = seq["name"].as_str().unwrap();
        let (mut bridge, mut child) = (Conn::new(Role::Bridge), Conn::new(Role::Child));
        for (i, step) in seq["steps"].as_array().unwrap().iter().enumerate() {
            let frame = unhex(step["hex"].as_str().unwrap());
            let msg = Message::decode(&frame[4..]).unwrap();
            let from_bridge = step["from"] == "bridge";
            let (sender, receiver) = if from_bridge {
                (&mut bridge, &mut child)
            } else {
                (&mut child, &mut bridge)
            };
            let before = (sender.state(), sender.in_flight().clone());
            let sent = sender.send(&msg);
            let received = receiver.receive(&msg);
            match step["error"].as_str() {
                None => {
                    assert_eq!(msg.type_name(), step["event"], "{name} step {i}");
                    assert!(
                        sent.is_ok() && received.is_ok(),
                        "{name} step {i}: {sent:?} {received:?}"
                    );
                }
                Some(kind) => {
                    for (side, got) in [("sender", sent), ("receiver", received)] {
                        let e = got.expect_err(&format!("{name} step {i}: the {side} took it"));
                        assert_eq!(
                            e.kind.as_str(),
                            kind,
                            "{name} step {i}, the {side}: {}",
                            e.message
                        );
                    }
                    assert_eq!(
                        (sender.state(), sender.in_flight().clone()),
                        before,
                        "{name}: a refused send changed the conn"
                    );
                }
            }
        }
    }
}

/// The closed set of kinds is the set the vectors name: none missing, none extra.
#[test]
fn error_kinds_are_the_vectors_kinds() {
    let v = vectors();
    let mut used: Vec<String> = v["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["error"].as_str().unwrap().to_owned())
        .collect();
    for seq in v["sequences"].as_array().unwrap() {
        for step in seq["steps"].as_array().unwrap() {
            if let Some(kind) = step["error"].as_str() {
                used.push(kind.to_owned());
            }
        }
    }
    used.sort();
    used.dedup();
    let mut ours: Vec<String> = ErrorKind::ALL
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    ours.sort();
    assert_eq!(used, ours);
}
