//! [`Plugin`]: the builder that holds the handler and hooks, and the serve loop.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};

use crate::conn::Conn;
use crate::outbox::{Outbox, TooLarge};
use crate::protocol::{
    self, DataRef, FrameReader, Hello, Message, PluginType, ProtocolError, ReadError, Ready,
    RequestMsg, PROTOCOL_VERSIONS,
};
use crate::request::{CancelToken, Logger, Request};
use crate::schema::{MsgType, Role};
use crate::value::Value;

// ---------------------------------------------------------------------------------------
// What a handler returns

/// A failed request: becomes an `error` answer (the engine's `info` is `message`).
///
/// Any `std::error::Error` converts into it, so `?` works in a handler; its `Display`
/// text becomes the message and its chain of sources the detail.
pub struct HandlerError {
    message: String,
    detail: String,
    data: Option<Value>,
}

impl HandlerError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            detail: String::new(),
            data: None,
        }
    }

    /// Set the detail (more text for a person, such as a trace).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Attach a value that goes with the failure (`error.data`): for a debug request
    /// the bridge shows it as the response's `value`; for a task it is not used.
    ///
    /// ```
    /// use flow_bridge_adapter::{json, HandlerError};
    /// let e = HandlerError::new("out of range").with_data(json!({ "reading": 120 }));
    /// assert!(e.data().is_some());
    /// ```
    pub fn with_data(mut self, data: impl Into<Value>) -> Self {
        self.data = Some(data.into());
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The value attached with [`HandlerError::with_data`], if any.
    pub fn data(&self) -> Option<&Value> {
        self.data.as_ref()
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        let mut detail = String::new();
        let mut source = e.source();
        while let Some(s) = source {
            if !detail.is_empty() {
                detail.push('\n');
            }
            detail.push_str("caused by: ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        HandlerError {
            message: e.to_string(),
            detail,
            data: None,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("message", &self.message)
            .field("detail", &self.detail)
            .field("data", &self.data)
            .finish()
    }
}

enum Data {
    Value(Value),
    Json(serde_json::Value),
}

/// A successful answer: `data` (any value) plus the optional `message` and `detail`.
///
/// Handlers usually return a `serde_json::Value` or a [`Value`] instead, which become a
/// `Reply` with an empty message and detail.
pub struct Reply {
    data: Data,
    message: String,
    detail: String,
}

impl Reply {
    /// A reply carrying `data`: any value (a map, an array, a string, a number, a bool,
    /// or null, which the engine gets as JSON `null`); `()` means an empty map.
    pub fn new(data: impl IntoReply) -> Reply {
        data.into_reply()
    }

    /// Set the success message (the engine's `info`).
    pub fn message(mut self, message: impl Into<String>) -> Reply {
        self.message = message.into();
        self
    }

    /// Set the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Reply {
        self.detail = detail.into();
        self
    }
}

/// What a handler may return inside `Ok`: [`Reply`], [`Value`], `serde_json::Value`
/// (any of them holding any value, null included) or `()` (an empty map).
pub trait IntoReply {
    fn into_reply(self) -> Reply;
}

impl IntoReply for Reply {
    fn into_reply(self) -> Reply {
        self
    }
}

impl IntoReply for Value {
    fn into_reply(self) -> Reply {
        Reply {
            data: Data::Value(self),
            message: String::new(),
            detail: String::new(),
        }
    }
}

impl IntoReply for serde_json::Value {
    fn into_reply(self) -> Reply {
        Reply {
            data: Data::Json(self),
            message: String::new(),
            detail: String::new(),
        }
    }
}

impl IntoReply for () {
    fn into_reply(self) -> Reply {
        Value::map().into_reply()
    }
}

// ---------------------------------------------------------------------------------------
// Errors of serve

/// Why [`Plugin::try_serve`] ended other than cleanly.
#[derive(Debug)]
pub enum ServeError {
    /// Reading or writing the pipes failed, or the descriptors could not be set up.
    Io(io::Error),
    /// The bridge's output broke the protocol.
    Protocol(ProtocolError),
    /// The bridge offers no protocol version this adapter speaks.
    Version { offered: Vec<u64> },
    /// The start hook failed.
    Start(HandlerError),
}

impl ServeError {
    /// The exit status a plugin should end with.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServeError::Version { .. } => 3,
            ServeError::Start(_) => 4,
            _ => 2,
        }
    }
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Io(e) => write!(f, "flow-bridge adapter: I/O error: {e}"),
            ServeError::Protocol(e) => {
                write!(f, "flow-bridge adapter: the bridge broke the protocol: {e}")
            }
            ServeError::Version { offered } => {
                let upgrade = if offered
                    .iter()
                    .any(|v| *v > *PROTOCOL_VERSIONS.last().unwrap())
                {
                    "upgrade the flow-bridge-adapter crate"
                } else {
                    "upgrade flow-bridge"
                };
                write!(
                    f,
                    "flow-bridge adapter speaks protocol {PROTOCOL_VERSIONS:?}, the bridge offers {offered:?}: {upgrade}"
                )
            }
            ServeError::Start(e) => {
                write!(
                    f,
                    "flow-bridge adapter: the start hook failed: {}",
                    e.message
                )?;
                if !e.detail.is_empty() {
                    write!(f, "\n{}", e.detail)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ServeError {}

impl From<ReadError> for ServeError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => ServeError::Io(e),
            ReadError::Protocol(e) => ServeError::Protocol(e),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The builder

type HandlerFn = dyn Fn(&Request) -> Result<Reply, HandlerError> + Send + Sync;
type StartHook = Box<dyn FnOnce(&Hello) -> Result<(), HandlerError> + Send>;
type StopHook = Box<dyn FnOnce() + Send>;
type StateHook = Box<dyn FnMut(bool) + Send>;

fn boxed_handler<F, R>(handler: F) -> Arc<HandlerFn>
where
    F: Fn(&Request) -> Result<R, HandlerError> + Send + Sync + 'static,
    R: IntoReply,
{
    Arc::new(move |request: &Request| handler(request).map(IntoReply::into_reply))
}

/// A plugin: a handler plus its settings and hooks. Build it, then call
/// [`Plugin::serve`] from `main`.
///
/// ```no_run
/// use flow_bridge_adapter::{Plugin, Request, HandlerError};
/// use serde_json::json;
///
/// fn main() {
///     Plugin::new(|request: &Request| -> Result<_, HandlerError> {
///         let n = request.config().and_then(|c| c["n"].as_i64()).unwrap_or(0);
///         request.log().info(format!("doubling {n}"));
///         Ok(json!({ "double": n * 2 }))
///     })
///     .name("doubler")
///     .concurrency(16)
///     .serve();
/// }
/// ```
pub struct Plugin {
    handler: Arc<HandlerFn>,
    debug_handler: Option<Arc<HandlerFn>>,
    debug: bool,
    concurrency: u32,
    name: String,
    plugin_type: Option<PluginType>,
    version: String,
    on_start: Option<StartHook>,
    on_stop: Option<StopHook>,
    on_state: Option<StateHook>,
}

impl Plugin {
    /// A plugin whose requests `handler` answers. It runs on a pool of threads (see
    /// [`Plugin::concurrency`]), so it must be `Send + Sync`. A returned `Err` becomes an
    /// `error` answer; so does a panic, which is caught.
    pub fn new<F, R>(handler: F) -> Plugin
    where
        F: Fn(&Request) -> Result<R, HandlerError> + Send + Sync + 'static,
        R: IntoReply,
    {
        Plugin {
            handler: boxed_handler(handler),
            debug_handler: None,
            debug: false,
            concurrency: 64,
            name: String::new(),
            plugin_type: None,
            version: concat!("flow-bridge-adapter (rust) ", env!("CARGO_PKG_VERSION")).to_owned(),
            on_start: None,
            on_stop: None,
            on_state: None,
        }
    }

    /// Whether the plugin takes `debug` requests (engine DebugRequests), with the same
    /// handler ([`Request::is_debug`] tells them apart). Off by default.
    pub fn debug(mut self, enabled: bool) -> Plugin {
        self.debug = enabled;
        self
    }

    /// Take `debug` requests with their own handler (this also enables them).
    pub fn debug_handler<F, R>(mut self, handler: F) -> Plugin
    where
        F: Fn(&Request) -> Result<R, HandlerError> + Send + Sync + 'static,
        R: IntoReply,
    {
        self.debug_handler = Some(boxed_handler(handler));
        self.debug = true;
        self
    }

    /// How many requests may run at once (1..=65536, default 64): the size of the
    /// thread pool, whose threads start as they are needed.
    pub fn concurrency(mut self, n: u32) -> Plugin {
        self.concurrency = n.clamp(1, 65536);
        self
    }

    /// The handler's own plugin name (`ready.name`): the bridge registers under it when
    /// no name is configured, and shows it in its logs.
    pub fn name(mut self, name: impl Into<String>) -> Plugin {
        self.name = name.into();
        self
    }

    /// The plugin type the handler declares (`ready.plugin_type`), used by the bridge
    /// when no type is configured. Not declared by default.
    pub fn plugin_type(mut self, plugin_type: PluginType) -> Plugin {
        self.plugin_type = Some(plugin_type);
        self
    }

    /// The handler's version, for the bridge's logs.
    pub fn version(mut self, version: impl Into<String>) -> Plugin {
        self.version = version.into();
        self
    }

    /// Run once after `hello`, before `ready`: open connections, load models. An `Err`
    /// ends the plugin with a non-zero status (the bridge reports a failed start).
    pub fn on_start<F>(mut self, hook: F) -> Plugin
    where
        F: FnOnce(&Hello) -> Result<(), HandlerError> + Send + 'static,
    {
        self.on_start = Some(Box::new(hook));
        self
    }

    /// Run once at the end, after the requests in flight have been answered.
    pub fn on_stop<F>(mut self, hook: F) -> Plugin
    where
        F: FnOnce() + Send + 'static,
    {
        self.on_stop = Some(Box::new(hook));
        self
    }

    /// Called with `true`/`false` when the bridge's link to the engine goes up/down.
    /// It runs on the thread that reads frames: keep it short.
    pub fn on_connection_state_changed<F>(mut self, hook: F) -> Plugin
    where
        F: FnMut(bool) + Send + 'static,
    {
        self.on_state = Some(Box::new(hook));
        self
    }

    /// Serve the bridge over stdin/stdout until `stop` or end of input, then return
    /// (so `main` ends with status 0). On a fatal error (the bridge broke the protocol,
    /// no common protocol version, the start hook failed) it writes the reason to
    /// stderr and exits with a non-zero status.
    pub fn serve(self) {
        if let Err(e) = self.try_serve() {
            eprintln!("{e}");
            std::process::exit(e.exit_code());
        }
    }

    /// Like [`Plugin::serve`], but return fatal errors to the caller.
    ///
    /// First it moves the protocol off fd 0 and fd 1 (SPEC 7.1): frames are read from a
    /// duplicate of fd 0 and written to a duplicate of fd 1, both close-on-exec; fd 1
    /// then points at stderr, so `println!` and child processes' output land in the
    /// bridge's log, and fd 0 at `/dev/null`.
    pub fn try_serve(self) -> Result<(), ServeError> {
        let (input, output) = crate::fdio::take_stdio().map_err(ServeError::Io)?;
        self.serve_io(input, output)
    }

    /// Serve over the given streams, without touching the process's descriptors
    /// (for tests and embedding).
    pub fn serve_io<R, W>(mut self, input: R, output: W) -> Result<(), ServeError>
    where
        R: Read,
        W: Write + Send + 'static,
    {
        let outbox = Arc::new(Outbox::new());
        let writer = {
            let outbox = outbox.clone();
            thread::Builder::new()
                .name("flow-bridge-writer".into())
                .spawn(move || outbox.run_writer(output))
                .map_err(ServeError::Io)?
        };
        let result = self.serve_inner(&outbox, input);
        if result.is_ok() {
            outbox.close();
            let _ = writer.join();
        } else {
            // Leave the writer to send what it can; the process is about to end.
            outbox.close();
        }
        result
    }

    fn serve_inner<R: Read>(&mut self, outbox: &Arc<Outbox>, input: R) -> Result<(), ServeError> {
        let mut reader = FrameReader::new(BufReader::with_capacity(64 * 1024, input));

        // Handshake. The conn holds the rules of who may send what, when, for which id.
        let mut conn = Conn::new(Role::Child);
        let hello = match reader.next_message()? {
            None => return Ok(()), // the bridge went away before saying hello
            Some(m) => {
                conn.receive(&m).map_err(ServeError::Protocol)?; // the first frame must be hello
                match m {
                    Message::Hello(h) => h,
                    other => unreachable!(
                        "the conn lets only hello through first, not {}",
                        other.type_name()
                    ),
                }
            }
        };
        let Some(version) = PROTOCOL_VERSIONS
            .iter()
            .rev()
            .copied()
            .find(|v| hello.protocols.contains(v))
        else {
            return Err(ServeError::Version {
                offered: hello.protocols,
            });
        };
        reader.set_max_frame(hello.max_frame);
        outbox.set_max_frame(hello.max_frame);
        if let Some(hook) = self.on_start.take() {
            match catch_unwind(AssertUnwindSafe(|| hook(&hello))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(ServeError::Start(e)),
                Err(panic) => {
                    return Err(ServeError::Start(HandlerError::new(format!(
                        "panicked: {}",
                        panic_text(&*panic)
                    ))))
                }
            }
        }
        let ready = Ready {
            protocol: version,
            concurrency: self.concurrency,
            debug: self.debug,
            name: self.name.clone(),
            version: self.version.clone(),
            plugin_type: self.plugin_type,
        };
        conn.send(&Message::Ready(ready.clone()))
            .map_err(ServeError::Protocol)?; // our own mistake: the version is one hello offered
        let _ = outbox.send(|out| protocol::encode_ready(out, &ready));
        outbox.set_open(conn.may_send(MsgType::Log));
        crate::set_global_outbox(Some(outbox.clone()));

        // Work.
        let shared = Arc::new(Shared {
            handler: self.handler.clone(),
            debug_handler: self.debug_handler.clone(),
            outbox: outbox.clone(),
            inflight: Mutex::new(InFlight {
                conn,
                tokens: HashMap::new(),
            }),
        });
        let pool = Pool::new(self.concurrency as usize, shared.clone());
        let end = loop {
            let next = reader.next_message();
            if let Ok(Some(m)) = &next {
                // What passes is a bridge message in its turn: after ready, before stop, a
                // request id not in flight. Stop ends the reading: nothing comes after it.
                if let Err(e) = shared.lock_inflight().conn.receive(m) {
                    break Err(ServeError::Protocol(e));
                }
            }
            match next {
                Ok(None) | Ok(Some(Message::Stop)) => break Ok(()),
                Ok(Some(Message::Task(req))) => shared.submit(&pool, req, false),
                Ok(Some(Message::Debug(req))) => {
                    if self.debug {
                        shared.submit(&pool, req, true)
                    } else {
                        shared.answer(
                            req.id,
                            Err(HandlerError::new(
                                "this handler does not take debug requests (ready.debug is false)",
                            )),
                        )
                    }
                }
                Ok(Some(Message::Cancel { id, .. })) => {
                    let token = shared.lock_inflight().tokens.get(&id).cloned();
                    if let Some(token) = token {
                        token.cancel();
                    } // else: already answered, the frames crossed
                }
                Ok(Some(Message::State { connected })) => {
                    if let Some(hook) = self.on_state.as_mut() {
                        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| hook(connected))) {
                            eprintln!(
                                "flow-bridge adapter: the connection state hook panicked: {}",
                                panic_text(&*panic)
                            );
                        }
                    }
                }
                Ok(Some(other)) => {
                    unreachable!(
                        "the conn lets no {} through from the bridge",
                        other.type_name()
                    )
                }
                Err(e) => break Err(e.into()),
            }
        };
        end?;

        // Stop: finish what is in flight (answers go out as they are made), then the hook.
        drop(reader);
        pool.shutdown();
        if let Some(hook) = self.on_stop.take() {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(hook)) {
                eprintln!(
                    "flow-bridge adapter: the stop hook panicked: {}",
                    panic_text(&*panic)
                );
            }
        }
        crate::set_global_outbox(None);
        Ok(())
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not text)".to_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Dispatch and the thread pool

struct Shared {
    handler: Arc<HandlerFn>,
    debug_handler: Option<Arc<HandlerFn>>,
    outbox: Arc<Outbox>,
    inflight: Mutex<InFlight>,
}

/// The conn (whose ids in flight are the requests') and the cancellation tokens of the
/// requests in flight, under one lock: the reader and the workers both change them.
struct InFlight {
    conn: Conn,
    tokens: HashMap<u64, CancelToken>,
}

impl Shared {
    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submit(&self, pool: &Pool, req: RequestMsg, debug: bool) {
        let token = CancelToken::new();
        self.lock_inflight().tokens.insert(req.id, token.clone());
        pool.submit(Request::new(req, debug, token, Some(self.outbox.clone())));
    }

    fn run(&self, request: Request) {
        let handler = match (&self.debug_handler, request.is_debug()) {
            (Some(h), true) => h,
            _ => &self.handler,
        };
        let outcome = match catch_unwind(AssertUnwindSafe(|| handler(&request))) {
            Ok(outcome) => outcome,
            Err(panic) => Err(HandlerError::new(format!(
                "handler panicked: {}",
                panic_text(&*panic)
            ))),
        };
        let id = request.id;
        drop(request);
        self.answer(id, outcome);
    }

    /// Send the one answer of request `id`, once the conn has taken the id out of flight.
    fn answer(&self, id: u64, outcome: Result<Reply, HandlerError>) {
        let ty = if outcome.is_ok() {
            MsgType::Result
        } else {
            MsgType::Error
        };
        {
            let mut inflight = self.lock_inflight();
            inflight.tokens.remove(&id);
            if let Err(e) = inflight.conn.send_parts(ty, id, 0, None) {
                // Cannot happen: every request is answered once, here.
                eprintln!("flow-bridge adapter: internal error, answer not sent: {e}");
                return;
            }
        }
        let error = match outcome {
            Ok(reply) => {
                // Any value is data (SPEC.md section 3); nil is JSON null.
                let data = match &reply.data {
                    Data::Value(v) => DataRef::Value(v),
                    Data::Json(v) => DataRef::Json(v),
                };
                match self.outbox.send(|out| {
                    protocol::encode_result_with(out, id, data, &reply.message, &reply.detail)
                }) {
                    Ok(()) => return,
                    // Answered at once, never dropped: the bridge's limit is the frame's.
                    Err(TooLarge(size)) => HandlerError::new(protocol::too_large_message(
                        size,
                        self.outbox.max_frame(),
                    )),
                }
            }
            Err(e) => e,
        };
        let mut detail = error.detail;
        if let Some(data) = &error.data {
            match self.outbox.send(|out| {
                protocol::encode_error(out, id, &error.message, &detail, Some(DataRef::Value(data)))
            }) {
                Ok(()) => return,
                Err(TooLarge(size)) => {
                    // The failure still goes out, without its value, saying why.
                    if !detail.is_empty() {
                        detail.push('\n');
                    }
                    detail.push_str(&format!(
                        "[flow-bridge adapter: the error's data was left out: the error frame is {size} bytes with it, the limit is {} (hello.max_frame)]",
                        self.outbox.max_frame()
                    ));
                }
            }
        }
        self.error(id, &error.message, &detail);
    }

    fn error(&self, id: u64, message: &str, detail: &str) {
        if let Err(TooLarge(size)) = self
            .outbox
            .send(|out| protocol::encode_error(out, id, message, detail, None))
        {
            let cut = &message[..message
                .char_indices()
                .nth(200)
                .map_or(message.len(), |(i, _)| i)];
            let message = format!("{cut}... [cut: error of {size} bytes exceeds the frame limit]");
            let _ = self
                .outbox
                .send(|out| protocol::encode_error(out, id, &message, "", None));
        }
    }
}

struct PoolState {
    queue: VecDeque<Request>,
    /// Workers waiting for a task.
    idle: usize,
    /// A worker has been woken and has not yet looked at the queue. Only one wake is
    /// in transit at a time; the woken worker wakes the next one if tasks remain. So a
    /// burst of quick tasks is drained by the workers already awake instead of costing
    /// one wake-up (and one sleep) per task.
    waking: bool,
    threads: usize,
    closed: bool,
}

/// A pool of up to `max` threads, started as they are needed and kept.
struct Pool {
    state: Arc<(Mutex<PoolState>, Condvar)>,
    shared: Arc<Shared>,
    max: usize,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    fn new(max: usize, shared: Arc<Shared>) -> Pool {
        Pool {
            state: Arc::new((
                Mutex::new(PoolState {
                    queue: VecDeque::new(),
                    idle: 0,
                    waking: false,
                    threads: 0,
                    closed: false,
                }),
                Condvar::new(),
            )),
            shared,
            max,
            handles: Mutex::new(Vec::new()),
        }
    }

    fn submit(&self, task: Request) {
        let (lock, cond) = &*self.state;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        st.queue.push_back(task);
        let wake = st.idle > 0 && !st.waking;
        st.waking |= wake;
        // More tasks waiting than idle workers to take them: one more thread (a
        // worker that takes a slow task would otherwise leave the rest queued).
        let spawn = st.queue.len() > st.idle && st.threads < self.max;
        st.threads += usize::from(spawn);
        drop(st);
        if wake {
            cond.notify_one();
        }
        if spawn {
            let state = self.state.clone();
            let shared = self.shared.clone();
            let spawned = thread::Builder::new()
                .name("flow-bridge-worker".into())
                .spawn(move || worker(&state, &shared));
            match spawned {
                Ok(h) => self
                    .handles
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(h),
                Err(e) => {
                    // Out of threads: the task waits for a busy worker instead.
                    let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                    st.threads -= 1;
                    let none_left = st.threads == 0;
                    drop(st);
                    eprintln!("flow-bridge adapter: cannot start a worker thread: {e}");
                    if none_left {
                        self.run_here();
                    }
                }
            }
        }
        // else: every thread is busy; the first to finish takes the task.
    }

    /// No thread at all could be started: run the queue on the reader's thread.
    fn run_here(&self) {
        loop {
            let task = {
                let mut st = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
                st.queue.pop_front()
            };
            match task {
                Some(t) => self.shared.run(t),
                None => return,
            }
        }
    }

    /// Let the workers finish the queue, then wait for them to end.
    fn shutdown(&self) {
        {
            let mut st = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
            st.closed = true;
        }
        self.state.1.notify_all();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.join();
        }
        self.run_here();
    }
}

fn worker(state: &(Mutex<PoolState>, Condvar), shared: &Shared) {
    let (lock, cond) = state;
    let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(task) = st.queue.pop_front() {
            let wake_next = !st.queue.is_empty() && st.idle > 0 && !st.waking;
            if wake_next {
                st.waking = true;
            }
            drop(st);
            if wake_next {
                cond.notify_one();
            }
            shared.run(task);
            st = lock.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        if st.closed {
            return;
        }
        st.idle += 1;
        st = cond.wait(st).unwrap_or_else(|e| e.into_inner());
        st.idle -= 1;
        // Woken on purpose or not, this worker now looks at the queue: the next
        // submit may wake another.
        st.waking = false;
    }
}

/// A logger whose records are not tied to a request: `log` frames without an id while
/// the plugin runs, stderr text before `ready` and after the end.
pub fn logger() -> Logger {
    Logger {
        id: None,
        out: crate::global_outbox(),
    }
}
