//! The outgoing side: every frame goes into one shared buffer, and one writer thread
//! takes the whole buffer at a time and writes it with one `write_all`. So frames are
//! never interleaved, a burst of answers costs one system call, and a frame is never
//! encoded or copied while the lock is held longer than a `memcpy`.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::protocol::{self, Level, DEFAULT_MAX_FRAME};

struct State {
    buf: Vec<u8>,
    closed: bool,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    cond: Condvar,
    max_frame: AtomicU32,
    /// Frames other than `ready` may be sent (after `ready`, before close).
    open: AtomicBool,
}

/// A frame that exceeds `max_frame`: its body size.
pub(crate) struct TooLarge(pub usize);

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

impl Outbox {
    pub(crate) fn new() -> Outbox {
        Outbox {
            state: Mutex::new(State {
                buf: Vec::with_capacity(64 * 1024),
                closed: false,
            }),
            cond: Condvar::new(),
            max_frame: AtomicU32::new(DEFAULT_MAX_FRAME),
            open: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_max_frame(&self, n: u32) {
        self.max_frame.store(n, Ordering::Relaxed);
    }

    pub(crate) fn max_frame(&self) -> u32 {
        self.max_frame.load(Ordering::Relaxed)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::Release);
    }

    /// Encode a frame body with `encode` and queue it, unless it exceeds `max_frame`.
    pub(crate) fn send(&self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), TooLarge> {
        SCRATCH.with(|scratch| {
            let mut frame = scratch.borrow_mut();
            frame.clear();
            frame.extend_from_slice(&[0; 4]);
            encode(&mut frame);
            let body = frame.len() - 4;
            let result = if body > self.max_frame() as usize {
                Err(TooLarge(body))
            } else {
                frame[..4].copy_from_slice(&(body as u32).to_be_bytes());
                self.push(&frame);
                Ok(())
            };
            if frame.capacity() > 1024 * 1024 {
                *frame = Vec::with_capacity(4096);
            }
            result
        })
    }

    fn push(&self, frame: &[u8]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = st.buf.is_empty();
        st.buf.extend_from_slice(frame);
        drop(st);
        // The writer only waits while the buffer is empty: whoever fills it wakes it.
        if was_empty {
            self.cond.notify_one();
        }
    }

    /// Queue a log record; one too large for a frame is cut short.
    pub(crate) fn log(&self, level: Level, msg: &str, id: Option<u64>) {
        let time = rfc3339_now();
        if let Err(TooLarge(size)) =
            self.send(|out| protocol::encode_log(out, level, msg, id, &time))
        {
            let keep = floor_char_boundary(msg, (self.max_frame() as usize).saturating_sub(256));
            let cut = format!(
                "{}... [cut: log record of {size} bytes exceeds max_frame]",
                &msg[..keep]
            );
            let _ = self.send(|out| protocol::encode_log(out, level, &cut, id, &time));
        }
    }

    /// No more frames: the writer writes what is queued and ends.
    pub(crate) fn close(&self) {
        self.set_open(false);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.closed = true;
        drop(st);
        self.cond.notify_all();
    }

    /// The writer thread's loop: take the whole buffer, write it, repeat until closed.
    pub(crate) fn run_writer(&self, mut sink: impl Write) {
        let mut spare: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut broken = false;
        loop {
            {
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                while st.buf.is_empty() && !st.closed {
                    st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if st.buf.is_empty() {
                    break; // closed and drained
                }
                std::mem::swap(&mut st.buf, &mut spare);
            }
            if !broken {
                if let Err(e) = sink.write_all(&spare).and_then(|()| sink.flush()) {
                    // The bridge is gone (or going): keep draining so nobody blocks.
                    broken = true;
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        eprintln!("flow-bridge adapter: writing frames failed: {e}");
                    }
                }
            }
            spare.clear();
            if spare.capacity() > 4 * 1024 * 1024 {
                spare = Vec::with_capacity(64 * 1024);
            }
        }
    }
}

pub(crate) fn log_to_stderr(level: Level, msg: &str, id: Option<u64>) {
    match id {
        Some(id) => eprintln!("[{}] (request {id}) {msg}", level.as_str()),
        None => eprintln!("[{}] {msg}", level.as_str()),
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The current UTC time as RFC 3339 with milliseconds (`2026-01-02T03:04:05.678Z`).
pub(crate) fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_millis())
}

pub(crate) fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_767_323_045, 678),
            "2026-01-02T03:04:05.678Z"
        );
        assert_eq!(super::rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    }
}
