//! What a handler sees: [`Request`], its [`CancelToken`] and its [`Logger`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::outbox::Outbox;
use crate::protocol::{Level, RequestMsg};

/// The error a cancellable wait returns once the request was cancelled.
///
/// With `?` in a handler it becomes an `error` answer whose message is `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cancelled")
    }
}

impl std::error::Error for Cancelled {}

#[derive(Default)]
struct CancelInner {
    flag: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
}

/// A request's cancellation flag. Cheap to clone; hand a clone to any thread that works
/// for the request.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<CancelInner>);

impl CancelToken {
    /// A fresh, uncancelled token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the bridge has cancelled the request.
    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::Acquire)
    }

    /// `Err(Cancelled)` once the request is cancelled, for use with `?`.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }

    /// Mark the request cancelled and wake every [`CancelToken::sleep`].
    pub fn cancel(&self) {
        let _guard = self.0.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.0.flag.store(true, Ordering::Release);
        self.0.cond.notify_all();
    }

    /// Sleep for `dur`, or until the request is cancelled: `Err(Cancelled)` then.
    pub fn sleep(&self, dur: Duration) -> Result<(), Cancelled> {
        self.check()?;
        let deadline = Instant::now().checked_add(dur);
        let mut guard = self.0.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.is_cancelled() {
                return Err(Cancelled);
            }
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Ok(()),
                },
                None => Duration::from_secs(3600),
            };
            guard = self
                .0
                .cond
                .wait_timeout(guard, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Sends log records to the bridge, tied to a request when it came from
/// [`Request::log`]. Outside a running plugin (before `ready`, after stop) records go to
/// stderr as text, which the bridge forwards to its log too.
#[derive(Clone)]
pub struct Logger {
    pub(crate) id: Option<u64>,
    pub(crate) out: Option<Arc<Outbox>>,
}

impl Logger {
    /// Log `msg` at `level`.
    pub fn log(&self, level: Level, msg: impl AsRef<str>) {
        let msg = msg.as_ref();
        match &self.out {
            Some(out) if out.is_open() => out.log(level, msg, self.id),
            _ => crate::outbox::log_to_stderr(level, msg, self.id),
        }
    }

    /// Log at level `debug`.
    pub fn debug(&self, msg: impl AsRef<str>) {
        self.log(Level::Debug, msg)
    }

    /// Log at level `info`.
    pub fn info(&self, msg: impl AsRef<str>) {
        self.log(Level::Info, msg)
    }

    /// Log at level `warning`.
    pub fn warning(&self, msg: impl AsRef<str>) {
        self.log(Level::Warning, msg)
    }

    /// Log at level `error`.
    pub fn error(&self, msg: impl AsRef<str>) {
        self.log(Level::Error, msg)
    }
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger").field("id", &self.id).finish()
    }
}

/// One request (an engine FlowRequest, or a DebugRequest) as the handler sees it.
pub struct Request {
    /// The bridge's id of the request.
    pub id: u64,
    /// The flow node's configuration, the engine's bytes unchanged.
    pub raw_config: Vec<u8>,
    pub project_id: String,
    pub flow_id: String,
    /// The flow job (empty for a debug request).
    pub job: String,
    pub element_id: String,
    pub element_job: String,
    /// The time the bridge allows for this request (`None`: no limit). The bridge sends
    /// `cancel` when it runs out.
    pub timeout: Option<Duration>,
    debug: bool,
    received: Instant,
    config: OnceLock<Option<serde_json::Value>>,
    cancel: CancelToken,
    log: Logger,
}

impl Request {
    pub(crate) fn new(
        req: RequestMsg,
        debug: bool,
        cancel: CancelToken,
        out: Option<Arc<Outbox>>,
    ) -> Request {
        Request {
            id: req.id,
            raw_config: req.config,
            project_id: req.project_id,
            flow_id: req.flow_id,
            job: req.job,
            element_id: req.element_id,
            element_job: req.element_job,
            timeout: (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms)),
            debug,
            received: Instant::now(),
            config: OnceLock::new(),
            cancel,
            log: Logger {
                id: Some(req.id),
                out,
            },
        }
    }

    /// A task for unit-testing a handler without a bridge: logs go to stderr.
    pub fn for_test(id: u64, config: impl Into<Vec<u8>>) -> Request {
        let req = RequestMsg {
            id,
            config: config.into(),
            ..RequestMsg::default()
        };
        Request::new(req, false, CancelToken::new(), None)
    }

    /// The configuration parsed as JSON, or `None` when the bytes are not UTF-8 JSON
    /// (then use [`Request::raw_config`]). Parsed once, on first use.
    pub fn config(&self) -> Option<&serde_json::Value> {
        self.config
            .get_or_init(|| serde_json::from_slice(&self.raw_config).ok())
            .as_ref()
    }

    /// The configuration as text, when it is valid UTF-8.
    pub fn config_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.raw_config).ok()
    }

    /// Whether this is a `debug` request (an engine DebugRequest) rather than a task.
    pub fn is_debug(&self) -> bool {
        self.debug
    }

    /// When the bridge will give up on this request, if it has a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| self.received + t)
    }

    /// Whether the bridge has cancelled this request (timeout or shutdown).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// `Err(Cancelled)` once the request is cancelled, for use with `?`.
    pub fn check_cancelled(&self) -> Result<(), Cancelled> {
        self.cancel.check()
    }

    /// Sleep for `dur`, waking early with `Err(Cancelled)` if the request is cancelled.
    pub fn sleep(&self, dur: Duration) -> Result<(), Cancelled> {
        self.cancel.sleep(dur)
    }

    /// The request's cancellation token, to pass to other threads.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// The request's logger: its records become `log` frames carrying this request's id
    /// (and, for a debug request, part of the engine's response).
    pub fn log(&self) -> &Logger {
        &self.log
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("debug", &self.debug)
            .field("config", &String::from_utf8_lossy(&self.raw_config))
            .field("project_id", &self.project_id)
            .field("flow_id", &self.flow_id)
            .field("job", &self.job)
            .field("element_id", &self.element_id)
            .field("element_job", &self.element_job)
            .field("timeout", &self.timeout)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
