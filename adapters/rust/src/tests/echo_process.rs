//! End to end: the echo example (examples/echo/rust, built here as the `echo` example
//! target) as a real subprocess over real pipes, with this test playing the bridge.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::protocol::{FrameReader, Hello, Message, Ready, RequestMsg};
use crate::{Level, Value};

const WAIT: Duration = Duration::from_secs(10);

fn echo_binary() -> PathBuf {
    // Tests run from target/<profile>/deps; examples are built into target/<profile>/examples.
    // Built once per test run, even when a binary is there: it may predate the sources.
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("examples").join("echo");
    BUILT.call_once(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--example", "echo", "--manifest-path"])
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().unwrap().success(),
            "building the echo example failed"
        );
    });
    bin
}

enum Out {
    Frame(Message),
    End,
    Broken(String),
}

struct Echo {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<Out>,
    stderr: Arc<Mutex<String>>,
    stdout_bytes: Arc<Mutex<usize>>,
}

impl Echo {
    fn start(env: &[(&str, &str)]) -> Echo {
        let mut cmd = Command::new(echo_binary());
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.env_remove("ECHO_BREAK");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the echo example");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (tx, frames) = mpsc::channel();
        let stdout_bytes = Arc::new(Mutex::new(0usize));
        let counted = stdout_bytes.clone();
        std::thread::spawn(move || {
            struct Counting<R>(R, Arc<Mutex<usize>>);
            impl<R: Read> Read for Counting<R> {
                fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                    let n = self.0.read(buf)?;
                    *self.1.lock().unwrap() += n;
                    Ok(n)
                }
            }
            let mut reader = FrameReader::new(Counting(stdout, counted));
            loop {
                let out = match reader.next_message() {
                    Ok(Some(m)) => Out::Frame(m),
                    Ok(None) => Out::End,
                    Err(e) => Out::Broken(e.to_string()),
                };
                let last = !matches!(out, Out::Frame(_));
                if tx.send(out).is_err() || last {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Echo {
            child,
            stdin,
            frames,
            stderr,
            stdout_bytes,
        }
    }

    fn send(&mut self, m: Message) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(&m.to_frame()).unwrap();
        stdin.flush().unwrap();
    }

    fn hello(&mut self, protocols: Vec<u64>) {
        self.send(Message::Hello(Hello {
            protocols,
            plugin: "echo".into(),
            plugin_type: crate::PluginType::Service,
            max_frame: 16 << 20,
            bridge: "echo_process test".into(),
        }));
    }

    fn handshake(&mut self) -> Ready {
        self.hello(vec![1]);
        match self.next() {
            Some(Message::Ready(r)) => r,
            other => panic!("expected ready, got {other:?}; stderr: {}", self.stderr()),
        }
    }

    fn task(&mut self, id: u64, config: impl AsRef<[u8]>) {
        self.send(Message::Task(RequestMsg {
            id,
            config: config.as_ref().to_vec(),
            element_job: format!("ej-{id}"),
            timeout_ms: 60_000,
            ..RequestMsg::default()
        }));
    }

    /// The next frame, or None at end of output.
    fn next(&mut self) -> Option<Message> {
        match self.frames.recv_timeout(WAIT) {
            Ok(Out::Frame(m)) => Some(m),
            Ok(Out::End) | Err(RecvTimeoutError::Disconnected) => None,
            Ok(Out::Broken(e)) => panic!(
                "the child broke the protocol: {e}; stderr: {}",
                self.stderr()
            ),
            Err(RecvTimeoutError::Timeout) => {
                panic!("no frame within {WAIT:?}; stderr: {}", self.stderr())
            }
        }
    }

    /// Answers (results and errors) in arrival order, until `n` have come; logs are
    /// collected on the side.
    fn answers(&mut self, n: usize) -> (Vec<Message>, Vec<Message>) {
        let (mut answers, mut logs) = (Vec::new(), Vec::new());
        while answers.len() < n {
            match self.next() {
                Some(m @ (Message::Result(_) | Message::Error(_))) => answers.push(m),
                Some(m @ Message::Log(_)) => logs.push(m),
                Some(other) => panic!("unexpected frame {other:?}"),
                None => panic!("output ended after {} of {n} answers", answers.len()),
            }
        }
        (answers, logs)
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the child did not exit within {within:?}; stderr: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn id_of(m: &Message) -> u64 {
    match m {
        Message::Result(r) => r.id,
        Message::Error(e) => e.id,
        Message::Log(l) => l.id.expect("log with an id"),
        other => panic!("no id in {other:?}"),
    }
}

fn data(m: &Message) -> &Value {
    match m {
        Message::Result(r) => &r.data,
        other => panic!("expected a result, got {other:?}"),
    }
}

fn echo_data(i: i64, n: usize) -> Value {
    Value::from_pairs([("i", Value::from(i)), ("n", Value::from(n))])
}

#[test]
fn handshake_declares_what_the_echo_contract_needs() {
    let mut echo = Echo::start(&[]);
    let ready = echo.handshake();
    assert_eq!(ready.protocol, 1);
    assert!(ready.concurrency >= 64);
    assert!(ready.debug);
    assert_eq!(ready.name, "echo");
}

#[test]
fn many_tasks_in_flight_are_answered_out_of_order() {
    let mut echo = Echo::start(&[]);
    echo.handshake();
    echo.task(1, r#"{"i": 1, "sleep_ms": 900}"#);
    echo.task(2, r#"{"i": 2, "sleep_ms": 450}"#);
    echo.task(3, r#"{"i": 3}"#);
    for id in 10..60 {
        echo.task(id, format!(r#"{{"i": {id}, "sleep_ms": 100}}"#));
    }
    let started = Instant::now();
    let (answers, _) = echo.answers(53);
    // All 50 sleepers ran at once (else 5 s), and the slow ones came last, slowest last.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    let order: Vec<u64> = answers.iter().map(id_of).collect();
    assert_eq!(order[0], 3, "{order:?}");
    assert_eq!(&order[51..], [2, 1], "{order:?}");
    for a in &answers {
        let id = id_of(a);
        assert_eq!(data(a), &echo_data(id as i64, 0));
    }
}

#[test]
fn cancel_stops_a_slow_task() {
    let mut echo = Echo::start(&[]);
    echo.handshake();
    echo.task(1, r#"{"i": 1, "sleep_ms": 60000}"#);
    echo.task(2, r#"{"i": 2}"#);
    let (answers, _) = echo.answers(1);
    assert_eq!(id_of(&answers[0]), 2);
    let started = Instant::now();
    echo.send(Message::Cancel {
        id: 1,
        reason: "timeout".into(),
    });
    let (answers, _) = echo.answers(1);
    assert!(started.elapsed() < Duration::from_secs(2));
    match &answers[0] {
        Message::Error(e) => assert_eq!((e.id, e.message.as_str()), (1, "cancelled")),
        other => panic!("expected error cancelled, got {other:?}"),
    }
    // A cancel for an answered id is ignored, and the child goes on working.
    echo.send(Message::Cancel {
        id: 1,
        reason: "timeout".into(),
    });
    echo.task(3, r#"{"i": 3}"#);
    let (answers, _) = echo.answers(1);
    assert_eq!(data(&answers[0]), &echo_data(3, 0));
}

#[test]
fn chinese_text_and_non_json_configs() {
    let mut echo = Echo::start(&[]);
    echo.handshake();
    let payload = "温度传感器🙂"; // 6 code points, 19 UTF-8 bytes
    let greeting = "你好，世界 🌍 Grüße";
    echo.task(
        1,
        serde_json::json!({"i": 1, "payload": payload, "echo": greeting}).to_string(),
    );
    echo.task(
        2,
        serde_json::to_string(&serde_json::json!({"i": 2, "payload": payload}))
            .unwrap()
            .replace(payload, "\\u6e29\\u5ea6\\u4f20\\u611f\\u5668\\ud83d\\ude42"),
    );
    let binary: &[u8] = b"\xff\xfe\x00\x01binary\x80";
    echo.task(3, binary);
    echo.task(4, "not json: naïve");
    echo.task(5, "[1, 2, 3]");
    echo.task(6, "");
    let (mut answers, _) = echo.answers(6);
    answers.sort_by_key(id_of);
    assert_eq!(data(&answers[0]), &echo_data(1, 6).with("echo", greeting));
    assert_eq!(data(&answers[1]), &echo_data(2, 6));
    for (a, raw) in
        answers[2..]
            .iter()
            .zip([binary, "not json: naïve".as_bytes(), b"[1, 2, 3]", b""])
    {
        assert_eq!(data(a), &Value::map().with("raw", Value::Bin(raw.to_vec())));
    }
}

#[test]
fn printing_inside_a_handler_goes_to_stderr_and_leaves_frames_intact() {
    let mut echo = Echo::start(&[]);
    echo.handshake();
    for k in 1..=4 {
        echo.task(
            k,
            format!(r#"{{"i": {k}, "print": "stdout probe {k} 日志"}}"#),
        );
    }
    let (answers, _) = echo.answers(4);
    for a in &answers {
        assert_eq!(data(a), &echo_data(id_of(a) as i64, 0));
    }
    echo.send(Message::Stop);
    assert!(echo.next().is_none());
    assert!(echo.wait_exit(WAIT).success());
    let stderr = echo.stderr();
    for k in 1..=4 {
        assert!(
            stderr.contains(&format!("stdout probe {k} 日志")),
            "stderr: {stderr}"
        );
    }
}

#[test]
fn errors_logs_and_debug_requests() {
    let mut echo = Echo::start(&[]);
    echo.handshake();
    echo.task(1, r#"{"i": 1, "fail": "broken sensor 传感器"}"#);
    echo.task(2, r#"{"i": 2, "log": "step one 第一步"}"#);
    let (answers, logs) = echo.answers(2);
    let fail = answers.iter().find(|a| id_of(a) == 1).unwrap();
    assert!(matches!(fail, Message::Error(e) if e.message.contains("broken sensor 传感器")));
    match &logs[..] {
        [Message::Log(l)] => {
            assert_eq!(
                (l.level, l.msg.as_str(), l.id),
                (Level::Info, "step one 第一步", Some(2))
            )
        }
        other => panic!("logs: {other:?}"),
    }
    echo.send(Message::Debug(RequestMsg {
        id: 3,
        config: br#"{"i": 5}"#.to_vec(),
        ..RequestMsg::default()
    }));
    let (answers, logs) = echo.answers(1);
    assert_eq!(data(&answers[0]), &echo_data(5, 0));
    assert!(matches!(&logs[..], [Message::Log(l)] if l.msg == "debug 5" && l.id == Some(3)));
}

fn ends_cleanly(how: &str) {
    let mut echo = Echo::start(&[]);
    echo.handshake();
    echo.send(Message::State { connected: true });
    echo.task(1, r#"{"i": 1, "sleep_ms": 300}"#);
    if how == "stop" {
        echo.send(Message::Stop);
    } else {
        echo.close_stdin();
    }
    let (answers, _) = echo.answers(1);
    assert_eq!(
        data(&answers[0]),
        &echo_data(1, 0),
        "the task in flight is finished, not cancelled"
    );
    assert!(echo.next().is_none(), "nothing after the last answer");
    let status = echo.wait_exit(WAIT);
    assert_eq!(
        status.code(),
        Some(0),
        "after {how}; stderr: {}",
        echo.stderr()
    );
}

#[test]
fn stop_finishes_in_flight_work_and_exits_0() {
    ends_cleanly("stop");
}

#[test]
fn end_of_input_finishes_in_flight_work_and_exits_0() {
    ends_cleanly("eof");
}

#[test]
fn no_common_version_exits_non_zero_without_a_frame() {
    let mut echo = Echo::start(&[]);
    echo.hello(vec![99]);
    let status = echo.wait_exit(WAIT);
    assert!(!status.success());
    assert!(echo.next().is_none());
    assert_eq!(*echo.stdout_bytes.lock().unwrap(), 0);
    std::thread::sleep(Duration::from_millis(100));
    assert!(echo.stderr().contains("99"), "stderr: {}", echo.stderr());
}

/// Over real pipes, a frame from the bridge out of turn ends the child with the kind on
/// stderr and a non-zero status: before hello, a second hello, a type only a child sends.
#[test]
fn a_bridge_message_out_of_turn_ends_the_child_with_its_kind() {
    let hello = Message::Hello(Hello {
        protocols: vec![1],
        plugin: "echo".into(),
        plugin_type: crate::PluginType::Service,
        max_frame: 16 << 20,
        bridge: "again".into(),
    });
    let result = Message::Result(crate::protocol::ResultMsg {
        id: 1,
        data: Value::Nil,
        message: String::new(),
        detail: String::new(),
    });
    for (handshake, bad, words) in [
        (
            false,
            Message::Stop,
            "the bridge sent a stop message before hello",
        ),
        (true, hello, "the bridge sent a second hello message"),
        (
            true,
            result,
            "the bridge sent a result message, which only the child sends",
        ),
    ] {
        let mut echo = Echo::start(&[]);
        if handshake {
            echo.handshake();
        }
        echo.send(bad);
        let status = echo.wait_exit(WAIT);
        std::thread::sleep(Duration::from_millis(100));
        let stderr = echo.stderr();
        assert!(!status.success(), "{words}: exit 0; stderr: {stderr}");
        assert!(
            stderr.contains(words) && stderr.contains("(unexpected)"),
            "stderr: {stderr}"
        );
    }
}

#[test]
fn echo_break_switches() {
    let mut echo = Echo::start(&[("ECHO_BREAK", "no-debug")]);
    assert!(!echo.handshake().debug);

    let mut echo = Echo::start(&[("ECHO_BREAK", "count-bytes")]);
    echo.handshake();
    echo.task(1, r#"{"i": 1, "payload": "温度"}"#);
    assert_eq!(data(&echo.answers(1).0[0]), &echo_data(1, 6));

    let mut echo = Echo::start(&[("ECHO_BREAK", "hang-on-stop")]);
    echo.handshake();
    echo.send(Message::Stop);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        echo.child.try_wait().unwrap().is_none(),
        "hang-on-stop exited"
    );
}

/// Throughput with the bridge's flow control (at most `ready.concurrency` in flight).
/// Run with `cargo test --release --test echo_process -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_throughput() {
    let total: u64 = std::env::var("BENCH_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let mut echo = Echo::start(&[]);
    let window = (echo.handshake().concurrency as u64).min(
        std::env::var("BENCH_WINDOW")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX),
    );
    let config = br#"{"i": 1, "payload": "hello"}"#.to_vec();
    let frame = |id: u64| {
        Message::Task(RequestMsg {
            id,
            config: config.clone(),
            ..RequestMsg::default()
        })
        .to_frame()
    };
    let started = Instant::now();
    let mut sent = 0u64;
    let mut batch = Vec::new();
    while sent < window.min(total) {
        batch.extend(frame(sent));
        sent += 1;
    }
    let mut done = 0u64;
    while done < total {
        let stdin = echo.stdin.as_mut().unwrap();
        stdin.write_all(&batch).unwrap();
        stdin.flush().unwrap();
        batch.clear();
        // Wait for one answer, then take every answer already there.
        let mut got = Vec::new();
        match echo.frames.recv_timeout(WAIT) {
            Ok(Out::Frame(m)) => got.push(m),
            _ => panic!("no answer"),
        }
        while let Ok(Out::Frame(m)) = echo.frames.try_recv() {
            got.push(m);
        }
        for m in got {
            assert!(matches!(m, Message::Result(_)), "{m:?}");
            done += 1;
            if sent < total {
                batch.extend(frame(sent));
                sent += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{total} tasks, {window} in flight, in {secs:.2} s: {:.0} tasks/s",
        total as f64 / secs
    );
}
