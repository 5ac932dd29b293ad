//! The wire protocol (SPEC.md sections 1 to 4): messages, their validation, framing.
//!
//! Internal: handler authors never need it, and only the types that appear in the
//! public API ([`Hello`], [`Level`], [`PluginType`], [`ProtocolError`], and the
//! generated [`ErrorKind`]) are re-exported. Which fields a message must have comes from
//! the generated tables (`schema.rs`, from protocol/schema.json); who may send it, and
//! when, is `conn.rs`'s. The tests in `src/tests` play the bridge with it.

use std::fmt;
use std::io::{self, Read};

use crate::msgpack::{self, ValueRef};
pub use crate::schema::ErrorKind;
use crate::schema::MsgType;
use crate::value::Value;

/// The protocol versions this adapter speaks.
pub const PROTOCOL_VERSIONS: &[u64] = &[1];
/// The frame size limit before `hello` says otherwise (16 MiB).
pub const DEFAULT_MAX_FRAME: u32 = 16 * 1024 * 1024;
/// The smallest `hello.max_frame` allowed.
pub const MIN_MAX_FRAME: u32 = 1024;
/// The largest `hello.max_frame` allowed.
pub const MAX_MAX_FRAME: u32 = 1024 * 1024 * 1024;
/// The largest request id (2^53 - 1).
pub const MAX_ID: u64 = (1 << 53) - 1;

/// A broken frame or message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ProtocolError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProtocolError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.as_str())
    }
}

impl std::error::Error for ProtocolError {}

/// What went wrong while reading a frame: the bytes, or the pipe.
#[derive(Debug)]
pub enum ReadError {
    Protocol(ProtocolError),
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Protocol(e) => e.fmt(f),
            ReadError::Io(e) => write!(f, "reading frames failed: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<ProtocolError> for ReadError {
    fn from(e: ProtocolError) -> Self {
        ReadError::Protocol(e)
    }
}

// ---------------------------------------------------------------------------------------
// Messages

/// How the engine treats a plugin: a service task or a user task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PluginType {
    #[default]
    Service,
    User,
}

impl PluginType {
    /// The type's name on the wire (`service`, `user`).
    pub fn as_str(self) -> &'static str {
        match self {
            PluginType::Service => "service",
            PluginType::User => "user",
        }
    }

    fn parse(s: &str) -> Option<PluginType> {
        match s {
            "service" => Some(PluginType::Service),
            "user" => Some(PluginType::User),
            _ => None,
        }
    }
}

impl fmt::Display for PluginType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `hello`, bridge -> child: what the bridge speaks and which plugin this is.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// The protocol versions the bridge speaks.
    pub protocols: Vec<u64>,
    /// The plugin's name as registered with the engine.
    pub plugin: String,
    /// The plugin's type as registered with the engine.
    pub plugin_type: PluginType,
    /// The largest frame body, in bytes, in both directions.
    pub max_frame: u32,
    /// The bridge's name and version, for logs.
    pub bridge: String,
}

/// `ready`, child -> bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    pub protocol: u64,
    pub concurrency: u32,
    pub debug: bool,
    pub name: String,
    pub version: String,
    /// The plugin type the handler declares; `None`: not declared (left out).
    pub plugin_type: Option<PluginType>,
}

/// A `task` or `debug` request (a debug request has no `job`; it is left empty).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestMsg {
    pub id: u64,
    pub config: Vec<u8>,
    pub project_id: String,
    pub flow_id: String,
    pub job: String,
    pub element_id: String,
    pub element_job: String,
    pub timeout_ms: u64,
}

/// `result`, child -> bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultMsg {
    pub id: u64,
    /// Any value: an empty map when the frame has none, [`Value::Nil`] for JSON null.
    pub data: Value,
    pub message: String,
    pub detail: String,
}

/// `error`, child -> bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorMsg {
    pub id: u64,
    pub message: String,
    pub detail: String,
    /// A value that goes with the failure (a debug response's value); `None`: absent.
    pub data: Option<Value>,
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

impl Level {
    /// The level's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }

    fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warning" => Level::Warning,
            "error" => Level::Error,
            _ => return None,
        })
    }
}

/// `log`, child -> bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMsg {
    pub level: Level,
    pub msg: String,
    pub id: Option<u64>,
    pub time: String,
}

/// One protocol message, either direction.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello(Hello),
    Ready(Ready),
    Task(RequestMsg),
    Debug(RequestMsg),
    Result(ResultMsg),
    Error(ErrorMsg),
    Log(LogMsg),
    Cancel { id: u64, reason: String },
    State { connected: bool },
    Stop,
}

impl Message {
    /// The message's `type`.
    pub fn type_name(&self) -> &'static str {
        self.msg_type().as_str()
    }

    /// The message's type, as the schema's tables know it.
    pub(crate) fn msg_type(&self) -> MsgType {
        match self {
            Message::Hello(_) => MsgType::Hello,
            Message::Ready(_) => MsgType::Ready,
            Message::Task(_) => MsgType::Task,
            Message::Debug(_) => MsgType::Debug,
            Message::Result(_) => MsgType::Result,
            Message::Error(_) => MsgType::Error,
            Message::Log(_) => MsgType::Log,
            Message::Cancel { .. } => MsgType::Cancel,
            Message::State { .. } => MsgType::State,
            Message::Stop => MsgType::Stop,
        }
    }

    /// The request id of a task, debug, result, error or cancel (0 for the others).
    pub(crate) fn request_id(&self) -> u64 {
        match self {
            Message::Task(r) | Message::Debug(r) => r.id,
            Message::Result(r) => r.id,
            Message::Error(e) => e.id,
            Message::Cancel { id, .. } => *id,
            _ => 0,
        }
    }

    /// Decode and validate one frame body.
    pub fn decode(body: &[u8]) -> Result<Message, ProtocolError> {
        if body.is_empty() {
            return Err(ProtocolError::new(
                ErrorKind::BadMsgpack,
                "empty frame: a frame must hold one msgpack map",
            ));
        }
        let value = msgpack::decode(body).map_err(|e| {
            ProtocolError::new(
                ErrorKind::BadMsgpack,
                format!("frame is not valid msgpack: {}", e.0),
            )
        })?;
        Message::from_value_ref(&value)
    }

    /// Build and validate a message from a decoded map.
    pub fn from_value_ref(value: &ValueRef<'_>) -> Result<Message, ProtocolError> {
        let ValueRef::Map(entries) = value else {
            return Err(ProtocolError::new(
                ErrorKind::NotAMap,
                format!("a frame must hold a msgpack map, got {}", value.kind()),
            ));
        };
        let f = Fields { entries, ty: "" };
        let ty = match f.get("type") {
            Some(ValueRef::Str(s)) => *s,
            _ => {
                return Err(ProtocolError::new(
                    ErrorKind::MissingType,
                    "the frame's map has no string 'type' field",
                ))
            }
        };
        let Some(msg_type) = MsgType::parse(ty) else {
            return Err(ProtocolError::new(
                ErrorKind::UnknownType,
                format!("unknown message type {ty:?}"),
            ));
        };
        let f = Fields { entries, ty };
        // The schema says which fields are required; the arms below check their values.
        let missing: Vec<&str> = msg_type
            .required()
            .iter()
            .copied()
            .filter(|name| f.get(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(ProtocolError::new(
                ErrorKind::BadField,
                format!(
                    "{ty} message lacks required field(s) {}",
                    missing.join(", ")
                ),
            ));
        }
        Ok(match ty {
            "hello" => {
                let protocols = match f.req("protocols")? {
                    ValueRef::Array(items) if !items.is_empty() => items
                        .iter()
                        .map(|v| match v {
                            ValueRef::Int(i) if *i > 0 => Ok(*i as u64),
                            ValueRef::UInt(u) => Ok(*u),
                            _ => Err(f.bad("protocols must be positive integers")),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => return Err(f.bad("protocols must be a non-empty array of integers")),
                };
                let plugin_type = f.plugin_type()?.unwrap_or_default();
                let max_frame = match f.get("max_frame") {
                    None => DEFAULT_MAX_FRAME,
                    Some(v) => match int_of(v) {
                        Some(n) if (MIN_MAX_FRAME as i128..=MAX_MAX_FRAME as i128).contains(&n) => {
                            n as u32
                        }
                        _ => {
                            return Err(f.bad(format!(
                                "max_frame must be an integer in {MIN_MAX_FRAME}..{MAX_MAX_FRAME}"
                            )))
                        }
                    },
                };
                Message::Hello(Hello {
                    protocols,
                    plugin: f.req_str("plugin")?,
                    plugin_type,
                    max_frame,
                    bridge: f.str_or("bridge", "")?,
                })
            }
            "ready" => {
                let protocol = match f.req("protocol").map(int_of)? {
                    Some(n) if n > 0 && n <= u64::MAX as i128 => n as u64,
                    _ => return Err(f.bad("protocol must be a positive integer")),
                };
                let concurrency = match f.get("concurrency").map(int_of) {
                    None => 1,
                    Some(Some(n)) if (1..=65536).contains(&n) => n as u32,
                    Some(_) => return Err(f.bad("concurrency must be an integer in 1..65536")),
                };
                let debug = match f.get("debug") {
                    None => false,
                    Some(ValueRef::Bool(b)) => *b,
                    Some(_) => return Err(f.bad("debug must be a boolean")),
                };
                Message::Ready(Ready {
                    protocol,
                    concurrency,
                    debug,
                    name: f.str_or("name", "")?,
                    version: f.str_or("version", "")?,
                    plugin_type: f.plugin_type()?,
                })
            }
            "task" | "debug" => {
                let id = f.id("id")?;
                let config = match f.req("config")? {
                    ValueRef::Bin(b) => b.to_vec(),
                    _ => return Err(f.bad("config must be bytes (msgpack bin)")),
                };
                let timeout_ms = match f.get("timeout_ms").map(int_of) {
                    None => 0,
                    Some(Some(n)) if n >= 0 => n as u64,
                    Some(_) => return Err(f.bad("timeout_ms must be a non-negative integer")),
                };
                let req = RequestMsg {
                    id,
                    config,
                    project_id: f.str_or("project_id", "")?,
                    flow_id: f.str_or("flow_id", "")?,
                    job: if ty == "task" {
                        f.str_or("job", "")?
                    } else {
                        String::new()
                    },
                    element_id: f.str_or("element_id", "")?,
                    element_job: f.str_or("element_job", "")?,
                    timeout_ms,
                };
                if ty == "task" {
                    Message::Task(req)
                } else {
                    Message::Debug(req)
                }
            }
            "result" => {
                let id = f.id("id")?;
                // Any value; absent is an empty map, while nil is JSON null.
                let data = f
                    .get("data")
                    .map_or_else(Value::map, ValueRef::to_owned_value);
                Message::Result(ResultMsg {
                    id,
                    data,
                    message: f.str_or("message", "")?,
                    detail: f.str_or("detail", "")?,
                })
            }
            "error" => Message::Error(ErrorMsg {
                id: f.id("id")?,
                message: f.req_str("message")?,
                detail: f.str_or("detail", "")?,
                data: f.get("data").map(ValueRef::to_owned_value),
            }),
            "log" => {
                let level = match f.req("level")? {
                    ValueRef::Str(s) => Level::parse(s),
                    _ => None,
                }
                .ok_or_else(|| f.bad("level must be one of debug, info, warning, error"))?;
                Message::Log(LogMsg {
                    level,
                    msg: f.req_str("msg")?,
                    id: match f.get("id") {
                        None => None,
                        Some(_) => Some(f.id("id")?),
                    },
                    time: f.str_or("time", "")?,
                })
            }
            "cancel" => Message::Cancel {
                id: f.id("id")?,
                reason: f.str_or("reason", "timeout")?,
            },
            "state" => match f.req("connected")? {
                ValueRef::Bool(b) => Message::State { connected: *b },
                _ => return Err(f.bad("connected must be a boolean")),
            },
            "stop" => Message::Stop,
            other => unreachable!("MsgType::parse knows every type, and {other:?} passed it"),
        })
    }

    /// Append the message's body (canonical form, no length header) to `out`. Only the
    /// tests need every message type; the child writes its own with the functions below.
    #[cfg(test)]
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        use msgpack::*;
        match self {
            Message::Hello(h) => {
                write_map_len(out, 6);
                write_str(out, "type");
                write_str(out, "hello");
                write_str(out, "protocols");
                write_array_len(out, h.protocols.len());
                for p in &h.protocols {
                    write_uint(out, *p);
                }
                write_str(out, "plugin");
                write_str(out, &h.plugin);
                write_str(out, "plugin_type");
                write_str(out, h.plugin_type.as_str());
                write_str(out, "max_frame");
                write_uint(out, h.max_frame as u64);
                write_str(out, "bridge");
                write_str(out, &h.bridge);
            }
            Message::Ready(r) => encode_ready(out, r),
            Message::Task(r) | Message::Debug(r) => {
                let task = matches!(self, Message::Task(_));
                write_map_len(out, if task { 9 } else { 8 });
                write_str(out, "type");
                write_str(out, if task { "task" } else { "debug" });
                write_str(out, "id");
                write_uint(out, r.id);
                write_str(out, "config");
                write_bin(out, &r.config);
                write_str(out, "project_id");
                write_str(out, &r.project_id);
                write_str(out, "flow_id");
                write_str(out, &r.flow_id);
                if task {
                    write_str(out, "job");
                    write_str(out, &r.job);
                }
                write_str(out, "element_id");
                write_str(out, &r.element_id);
                write_str(out, "element_job");
                write_str(out, &r.element_job);
                write_str(out, "timeout_ms");
                write_uint(out, r.timeout_ms);
            }
            Message::Result(r) => encode_result(out, r.id, &r.data, &r.message, &r.detail),
            Message::Error(e) => encode_error(
                out,
                e.id,
                &e.message,
                &e.detail,
                e.data.as_ref().map(DataRef::Value),
            ),
            Message::Log(l) => encode_log(out, l.level, &l.msg, l.id, &l.time),
            Message::Cancel { id, reason } => {
                write_map_len(out, 3);
                write_str(out, "type");
                write_str(out, "cancel");
                write_str(out, "id");
                write_uint(out, *id);
                write_str(out, "reason");
                write_str(out, reason);
            }
            Message::State { connected } => {
                write_map_len(out, 2);
                write_str(out, "type");
                write_str(out, "state");
                write_str(out, "connected");
                write_bool(out, *connected);
            }
            Message::Stop => {
                write_map_len(out, 1);
                write_str(out, "type");
                write_str(out, "stop");
            }
        }
    }

    /// The whole frame: length header and canonical body.
    #[cfg(test)]
    pub fn to_frame(&self) -> Vec<u8> {
        let mut out = vec![0; 4];
        self.encode_body(&mut out);
        let n = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&n.to_be_bytes());
        out
    }
}

pub(crate) fn encode_ready(out: &mut Vec<u8>, r: &Ready) {
    use msgpack::*;
    write_map_len(out, if r.plugin_type.is_some() { 7 } else { 6 });
    write_str(out, "type");
    write_str(out, "ready");
    write_str(out, "protocol");
    write_uint(out, r.protocol);
    write_str(out, "concurrency");
    write_uint(out, r.concurrency as u64);
    write_str(out, "debug");
    write_bool(out, r.debug);
    write_str(out, "name");
    write_str(out, &r.name);
    write_str(out, "version");
    write_str(out, &r.version);
    if let Some(t) = r.plugin_type {
        write_str(out, "plugin_type");
        write_str(out, t.as_str());
    }
}

/// The data of a result or error, in either representation, so that a handler's
/// `serde_json::Value` is written without a conversion.
#[derive(Clone, Copy)]
pub(crate) enum DataRef<'a> {
    Value(&'a Value),
    Json(&'a serde_json::Value),
}

fn write_data(out: &mut Vec<u8>, data: DataRef<'_>) {
    match data {
        DataRef::Value(v) => msgpack::write_value(out, v),
        DataRef::Json(v) => msgpack::write_json(out, v),
    }
}

pub(crate) fn encode_result_with(
    out: &mut Vec<u8>,
    id: u64,
    data: DataRef<'_>,
    message: &str,
    detail: &str,
) {
    use msgpack::*;
    write_map_len(out, 5);
    write_str(out, "type");
    write_str(out, "result");
    write_str(out, "id");
    write_uint(out, id);
    write_str(out, "data");
    write_data(out, data);
    write_str(out, "message");
    write_str(out, message);
    write_str(out, "detail");
    write_str(out, detail);
}

#[cfg(test)]
pub(crate) fn encode_result(out: &mut Vec<u8>, id: u64, data: &Value, message: &str, detail: &str) {
    encode_result_with(out, id, DataRef::Value(data), message, detail)
}

/// An error frame's body; `data` `None` leaves the field out.
pub(crate) fn encode_error(
    out: &mut Vec<u8>,
    id: u64,
    message: &str,
    detail: &str,
    data: Option<DataRef<'_>>,
) {
    use msgpack::*;
    write_map_len(out, if data.is_some() { 5 } else { 4 });
    write_str(out, "type");
    write_str(out, "error");
    write_str(out, "id");
    write_uint(out, id);
    write_str(out, "message");
    write_str(out, message);
    write_str(out, "detail");
    write_str(out, detail);
    if let Some(data) = data {
        write_str(out, "data");
        write_data(out, data);
    }
}

/// The error message for a result frame of `size` bytes over `max_frame`, in the words
/// every adapter uses (SPEC.md section 4).
pub(crate) fn too_large_message(size: usize, max_frame: u32) -> String {
    format!(
        "result too large: {size} bytes, the limit is {max_frame} (hello.max_frame); return less data"
    )
}

pub(crate) fn encode_log(out: &mut Vec<u8>, level: Level, msg: &str, id: Option<u64>, time: &str) {
    use msgpack::*;
    write_map_len(out, if id.is_some() { 5 } else { 4 });
    write_str(out, "type");
    write_str(out, "log");
    write_str(out, "level");
    write_str(out, level.as_str());
    write_str(out, "msg");
    write_str(out, msg);
    if let Some(id) = id {
        write_str(out, "id");
        write_uint(out, id);
    }
    write_str(out, "time");
    write_str(out, time);
}

fn int_of(v: &ValueRef<'_>) -> Option<i128> {
    match *v {
        ValueRef::Int(i) => Some(i as i128),
        ValueRef::UInt(u) => Some(u as i128),
        _ => None,
    }
}

/// The entries of a message map, with typed accessors that fail with `bad_field`.
struct Fields<'m, 'a> {
    entries: &'m [(ValueRef<'a>, ValueRef<'a>)],
    ty: &'m str,
}

impl<'m, 'a> Fields<'m, 'a> {
    /// The value under `name` (the last one, if the key repeats).
    fn get(&self, name: &str) -> Option<&'m ValueRef<'a>> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, ValueRef::Str(s) if *s == name))
            .map(|(_, v)| v)
    }

    fn bad(&self, what: impl fmt::Display) -> ProtocolError {
        ProtocolError::new(
            ErrorKind::BadField,
            format!("invalid {} message: {what}", self.ty),
        )
    }

    fn req(&self, name: &str) -> Result<&'m ValueRef<'a>, ProtocolError> {
        self.get(name).ok_or_else(|| {
            ProtocolError::new(
                ErrorKind::BadField,
                format!("{} message lacks required field {name}", self.ty),
            )
        })
    }

    fn req_str(&self, name: &str) -> Result<String, ProtocolError> {
        match self.req(name)? {
            ValueRef::Str(s) => Ok((*s).to_owned()),
            v => Err(self.bad(format!("{name} must be a string, got {}", v.kind()))),
        }
    }

    fn str_or(&self, name: &str, default: &str) -> Result<String, ProtocolError> {
        match self.get(name) {
            None => Ok(default.to_owned()),
            Some(ValueRef::Str(s)) => Ok((*s).to_owned()),
            Some(v) => Err(self.bad(format!("{name} must be a string, got {}", v.kind()))),
        }
    }

    /// `plugin_type`, when present: `service` or `user`.
    fn plugin_type(&self) -> Result<Option<PluginType>, ProtocolError> {
        match self.get("plugin_type") {
            None => Ok(None),
            Some(ValueRef::Str(s)) => PluginType::parse(s).map(Some).ok_or_else(|| {
                self.bad(format!(
                    "plugin_type must be 'service' or 'user', got {s:?}"
                ))
            }),
            Some(v) => Err(self.bad(format!("plugin_type must be a string, got {}", v.kind()))),
        }
    }

    fn id(&self, name: &str) -> Result<u64, ProtocolError> {
        match int_of(self.req(name)?) {
            Some(n) if (0..=MAX_ID as i128).contains(&n) => Ok(n as u64),
            _ => Err(self.bad(format!("{name} must be an integer in 0..2**53-1"))),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Framing

/// Reads frames from a byte stream, checking each declared length against the limit
/// before reading the body.
pub struct FrameReader<R> {
    inner: R,
    max_frame: u32,
    body: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    /// A reader with the default limit; use [`FrameReader::set_max_frame`] after `hello`.
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            max_frame: DEFAULT_MAX_FRAME,
            body: Vec::new(),
        }
    }

    /// Change the frame size limit.
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
    }

    /// The next frame's body, or `None` at a clean end of input (between frames).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, ReadError> {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.inner.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(ProtocolError::new(
                        ErrorKind::Truncated,
                        format!("input ended inside a frame header ({got} of 4 bytes)"),
                    )
                    .into())
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        let len = u32::from_be_bytes(header);
        if len > self.max_frame {
            return Err(ProtocolError::new(
                ErrorKind::FrameTooLarge,
                format!(
                    "frame of {len} bytes exceeds the limit of {} (first bytes {:02x?}; text here means something else wrote to the protocol pipe)",
                    self.max_frame, header
                ),
            )
            .into());
        }
        self.body.clear();
        // read_to_end on a Take grows the buffer as bytes arrive, so a lying length
        // costs no more memory than the bytes actually sent.
        let n = (&mut self.inner)
            .take(len as u64)
            .read_to_end(&mut self.body)
            .map_err(ReadError::Io)?;
        if n < len as usize {
            return Err(ProtocolError::new(
                ErrorKind::Truncated,
                format!("input ended inside a frame ({n} of {len} body bytes)"),
            )
            .into());
        }
        if self.body.capacity() > 4 * 1024 * 1024 && len < 64 * 1024 {
            self.body.shrink_to(64 * 1024);
        }
        Ok(Some(&self.body))
    }

    /// The next message, or `None` at a clean end of input.
    pub fn next_message(&mut self) -> Result<Option<Message>, ReadError> {
        match self.next_frame()? {
            None => Ok(None),
            Some(body) => Ok(Some(Message::decode(body)?)),
        }
    }
}
