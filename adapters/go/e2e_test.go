package flowbridge

// End-to-end tests: a real child process (this test binary, re-executed, or the echo
// example) driven through real pipes, as the bridge drives it.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

const childEnv = "FLOWBRIDGE_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		testChildMain()
		return
	}
	os.Exit(m.Run())
}

// testChildMain is the handler run by the child processes: the echo contract plus
// a few extra switches (panic, bad data, subprocesses).
func testChildMain() {
	p := Plugin{
		Execute:     testExecute,
		Debug:       testExecute,
		Concurrency: 64,
		Name:        "test-child",
		PluginType:  PluginType(os.Getenv("PLUGIN_TYPE")),
		Version:     "0.0.1",
		Start: func() error {
			Logger().Info("start hook ran") // before ready: goes to stderr
			if os.Getenv("FAIL_START") != "" {
				return errors.New("start failed on purpose")
			}
			return nil
		},
		Stop: func() {
			fmt.Fprintln(os.Stderr, "stop hook ran")
			Logger().Info("stop hook log")
		},
		OnConnectionStateChanged: func(up bool) {
			fmt.Fprintf(os.Stderr, "state connected=%v\n", up)
		},
	}
	if path := os.Getenv("FLOWBRIDGE_TEST_CPUPROFILE"); path != "" { // for profiling the benchmarks
		f, _ := os.Create(path)
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := Serve(p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type bigStruct struct {
	Name  string `json:"name"`
	Skip  string `json:"-"`
	Empty string `json:"empty,omitempty"`
	Count int
}

func testExecute(ctx context.Context, t *Request) (any, error) {
	if os.Getenv("HOLD_REQUESTS") != "" { // every request stays in flight until cancelled
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if t.IsDebug {
		t.Logf(0, "debug %v", t.ID)
	}
	cfg := t.ConfigMap()
	if cfg == nil {
		return map[string]any{"raw": t.RawConfig, "ok": t.ConfigOK()}, nil
	}
	if s, ok := cfg["fail"].(string); ok {
		return nil, errors.New(s)
	}
	if s, ok := cfg["fail_detail"].(string); ok {
		return nil, &HandlerError{Message: "explicit", Detail: s}
	}
	if s, ok := cfg["panic"].(string); ok {
		panic(s)
	}
	if s, ok := cfg["print"].(string); ok {
		fmt.Println(s)
		fmt.Print(s) // no newline: still must not reach the frames
		os.Stdout.WriteString(s + "\n")
		// A child process inherits fd 1 (now stderr) and fd 0 (now /dev/null).
		cmd := exec.Command("sh", "-c", "echo sub-$0; cat", s)
		cmd.Stdin, cmd.Stdout = os.Stdin, os.Stdout // inherit fds 0 and 1, as Python would
		if err := cmd.Run(); err != nil {
			return nil, err
		}
	}
	if s, ok := cfg["log"].(string); ok {
		t.Log.Info(s, "element", t.ElementID, "n", 3)
		t.Log.Warn("warned")
	}
	if n, ok := cfg["sleep_ms"].(json.Number); ok {
		ms, _ := n.Int64()
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if _, ok := cfg["array"]; ok {
		return []int{1, 2}, nil
	}
	if _, ok := cfg["text"]; ok {
		return "plain text", nil
	}
	if _, ok := cfg["null"]; ok {
		return Null, nil
	}
	if _, ok := cfg["fail_data"]; ok {
		return nil, fmt.Errorf("reading: %w", &HandlerError{Message: "out of range", Detail: "sensor 3", Data: map[string]any{"reading": 120}})
	}
	if _, ok := cfg["fail_bad_data"]; ok {
		return nil, &HandlerError{Message: "odd", Detail: "d", Data: make(chan int)}
	}
	if n, ok := cfg["fail_big_data"].(json.Number); ok {
		k, _ := n.Int64()
		return nil, &HandlerError{Message: "big", Detail: "d", Data: strings.Repeat("x", int(k))}
	}
	if n, ok := cfg["bin"].(json.Number); ok {
		k, _ := n.Int64()
		return bytes.Repeat([]byte{0xfe}, int(k)), nil
	}
	if n, ok := cfg["control"].(json.Number); ok {
		k, _ := n.Int64()
		return map[string]any{"s": strings.Repeat("\x01", int(k))}, nil
	}
	if n, ok := cfg["big_log"].(json.Number); ok {
		k, _ := n.Int64()
		t.Log.Info(strings.Repeat("y", int(k)))
		return nil, nil
	}
	if _, ok := cfg["struct"]; ok {
		return Reply{Data: &bigStruct{Name: "x", Skip: "y", Count: 2}, Message: "ok", Detail: "d"}, nil
	}
	if n, ok := cfg["big"].(json.Number); ok {
		k, _ := n.Int64()
		return map[string]any{"s": strings.Repeat("x", int(k))}, nil
	}
	payload, _ := cfg["payload"].(string)
	data := map[string]any{
		"i": cfg["i"], "n": utf8.RuneCountInString(payload),
		"project_id": t.ProjectID, "element_job": t.ElementJob, "timeout_ms": t.Timeout.Milliseconds(),
	}
	if echo, ok := cfg["echo"]; ok {
		data["echo"] = echo
	}
	return data, nil
}

// ---------------------------------------------------------------------------
// A minimal bridge for the tests.

type testBridge struct {
	t       testing.TB
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	out     *bufio.Reader
	stderr  *lockedBuffer
	frames  chan *message
	readErr chan error

	stopLogged bool
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startChild(t testing.TB, cmd *exec.Cmd) *testBridge {
	t.Helper()
	b := &testBridge{t: t, cmd: cmd, stderr: &lockedBuffer{}, frames: make(chan *message, 1000), readErr: make(chan error, 1)}
	var err error
	if b.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = b.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("child stderr:\n%s", b.stderr.String())
		}
	})
	b.out = bufio.NewReader(stdout)
	go func() {
		for {
			// Any size the protocol allows: tests check the child's sizes themselves.
			body, err := readFrame(b.out, maxMaxFrame)
			if err != nil {
				b.readErr <- err
				close(b.frames)
				return
			}
			m := new(message)
			if err := decodeMessage(body, m); err != nil {
				b.readErr <- fmt.Errorf("child broke the protocol: %w (body %q)", err, body)
				close(b.frames)
				return
			}
			b.frames <- m
		}
	}()
	return b
}

func startTestChild(t testing.TB, env ...string) *testBridge {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"=1"), env...)
	return startChild(t, cmd)
}

// send writes one frame whose map holds kv (key, value, key, value...), in order.
func (b *testBridge) send(kv ...any) {
	b.t.Helper()
	m := Map{}
	for i := 0; i < len(kv); i += 2 {
		m = append(m, KV{kv[i].(string), kv[i+1]})
	}
	var enc encoder
	body, err := enc.appendValue(nil, m, 0)
	if err != nil {
		b.t.Fatal(err)
	}
	frame := append([]byte{byte(len(body) >> 24), byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	if _, err := b.stdin.Write(frame); err != nil {
		b.t.Fatalf("write to child: %v", err)
	}
}

func (b *testBridge) hello(maxFrame int) {
	b.send("type", "hello", "protocols", []any{1}, "plugin", "test", "plugin_type", "service", "max_frame", maxFrame, "bridge", "go-test")
}

func (b *testBridge) task(id int, config string, extra ...any) {
	b.send(append([]any{"type", "task", "id", id, "config", []byte(config)}, extra...)...)
}

// next returns the next frame from the child, failing after a timeout.
func (b *testBridge) next() *message {
	b.t.Helper()
	select {
	case m, ok := <-b.frames:
		if !ok {
			b.t.Fatalf("child output ended: %v", <-b.readErr)
		}
		return m
	case <-time.After(10 * time.Second):
		b.t.Fatal("no frame from the child within 10s")
	}
	return nil
}

// answer returns the next result or error, collecting the log frames before it.
func (b *testBridge) answer() (*message, []*message) {
	b.t.Helper()
	var logs []*message
	for {
		m := b.next()
		if m.typ == "log" {
			logs = append(logs, m)
			continue
		}
		if m.typ != "result" && m.typ != "error" {
			b.t.Fatalf("unexpected %s frame", m.typ)
		}
		return m, logs
	}
}

func (b *testBridge) ready() *message {
	b.t.Helper()
	m := b.next()
	if m.typ != "ready" {
		b.t.Fatalf("first frame is %s, want ready", m.typ)
	}
	return m
}

// waitExit waits for the child's output to end cleanly and the child to exit.
func (b *testBridge) waitExit() (int, []*message) {
	b.t.Helper()
	var rest []*message
	for m := range b.frames {
		if m.typ == "log" && m.msg == "stop hook log" && !m.hasID {
			b.stopLogged = true // the test child's stop hook logs this
			continue
		}
		rest = append(rest, m)
	}
	if err := <-b.readErr; err != io.EOF {
		b.t.Errorf("child output did not end cleanly: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.t.Fatal("child did not exit")
	}
	return b.cmd.ProcessState.ExitCode(), rest
}

func dataOf(t *testing.T, m *message) map[string]any {
	t.Helper()
	if m.typ != "result" {
		t.Fatalf("got %s (%q, %q), want a result", m.typ, m.message, m.detail)
	}
	d, ok := m.data.(map[string]any)
	if !ok {
		t.Fatalf("data is %T", m.data)
	}
	return d
}

// ---------------------------------------------------------------------------

func TestChildHandshake(t *testing.T) {
	b := startTestChild(t)
	time.Sleep(50 * time.Millisecond)
	select {
	case m := <-b.frames:
		t.Fatalf("child wrote %s before hello", m.typ)
	default:
	}
	b.hello(DefaultMaxFrame)
	r := b.ready()
	if r.protocol != 1 || r.concurrency != 64 || !r.debug || r.name != "test-child" || r.version != "0.0.1" || r.pluginType != "" {
		t.Errorf("ready: %+v", r)
	}
	b.stdin.Close()
	if code, rest := b.waitExit(); code != 0 || len(rest) != 0 {
		t.Errorf("exit %d, extra frames %v", code, rest)
	}
	if !strings.Contains(b.stderr.String(), "start hook ran") || !strings.Contains(b.stderr.String(), "stop hook ran") {
		t.Errorf("hooks did not run; stderr:\n%s", b.stderr)
	}
}

func TestChildDeclaresPluginType(t *testing.T) {
	b := startTestChild(t, "PLUGIN_TYPE=user")
	b.hello(DefaultMaxFrame)
	if r := b.ready(); r.pluginType != "user" || r.name != "test-child" {
		t.Errorf("ready: %+v", r)
	}
	b.stdin.Close()
	if code, _ := b.waitExit(); code != 0 {
		t.Errorf("exit %d", code)
	}
	// Outside the closed set: Serve refuses to start.
	b = startTestChild(t, "PLUGIN_TYPE=daemon")
	if code, rest := b.waitExit(); code == 0 || len(rest) != 0 || !strings.Contains(b.stderr.String(), `PluginType must be PluginService, PluginUser or empty, got "daemon"`) {
		t.Errorf("exit %d, stderr:\n%s", code, b.stderr)
	}
}

func TestChildOutOfOrderAndFields(t *testing.T) {
	b := startTestChild(t)
	b.hello(DefaultMaxFrame)
	b.ready()
	b.task(1, `{"i":1,"sleep_ms":600}`)
	b.task(2, `{"i":2,"sleep_ms":300}`)
	b.task(3, `{"i":3}`, "project_id", "项目", "element_job", "元素-1", "timeout_ms", 1500)
	var order []uint64
	for range 3 {
		m, _ := b.answer()
		d := dataOf(t, m)
		if d["i"] != int64(m.id) {
			t.Errorf("answer %d carries i=%v", m.id, d["i"])
		}
		if m.id == 3 && (d["project_id"] != "项目" || d["element_job"] != "元素-1" || d["timeout_ms"] != int64(1500)) {
			t.Errorf("task fields: %v", d)
		}
		order = append(order, m.id)
	}
	if fmt.Sprint(order) != "[3 2 1]" {
		t.Errorf("answer order %v, want [3 2 1]", order)
	}
	b.send("type", "stop")
	if code, _ := b.waitExit(); code != 0 {
		t.Errorf("exit %d", code)
	}
}

func TestChildManyInFlight(t *testing.T) {
	b := startTestChild(t)
	b.hello(DefaultMaxFrame)
	b.ready()
	const n = 64
	for i := range n {
		b.task(i, fmt.Sprintf(`{"i":%d,"sleep_ms":%d}`, i, (n-i)*5))
	}
	seen := map[uint64]bool{}
	start := time.Now()
	for range n {
		m, _ := b.answer()
		if seen[m.id] {
			t.Fatalf("two answers for %d", m.id)
		}
		seen[m.id] = true
		dataOf(t, m)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("64 concurrent sleeps of at most 320ms took %v: not concurrent?", el)
	}
	b.stdin.Close()
	if code, rest := b.waitExit(); code != 0 || len(rest) != 0 {
		t.Errorf("exit %d, extra %d frames", code, len(rest))
	}
}

func TestChildCancel(t *testing.T) {
	b := startTestChild(t)
	b.hello(DefaultMaxFrame)
	b.ready()
	b.task(5, `{"sleep_ms":30000}`)
	b.task(6, `{"i":6}`)
	if m, _ := b.answer(); m.id != 6 {
		t.Fatalf("got answer %d first", m.id)
	}
	start := time.Now()
	b.send("type", "cancel", "id", 5, "reason", "timeout")
	m, _ := b.answer()
	if m.id != 5 || m.typ != "error" || m.message != "cancelled" {
		t.Fatalf("got %s %d %q, want error 5 cancelled", m.typ, m.id, m.message)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("cancel took %v", el)
	}
	// A cancel for an id already answered is ignored, as is one for an unknown id.
	b.send("type", "cancel", "id", 5)
	b.send("type", "cancel", "id", 99, "reason", "shutdown")
	b.task(7, `{"i":7}`)
	if m, _ := b.answer(); m.id != 7 || m.typ != "result" {
		t.Fatalf("got %s %d after stale cancels", m.typ, m.id)
	}
	b.send("type", "stop")
	if code, rest := b.waitExit(); code != 0 || len(rest) != 0 {
		t.Errorf("exit %d, extra frames %d", code, len(rest))
	}
}

func TestChildUnicodeAndLogs(t *testing.T) {
	b := startTestChild(t)
	b.hello(DefaultMaxFrame)
	b.ready()
	b.task(8, `{"i":8,"payload":"温度传感器","log":"读数 ok","echo":{"a":[1,2.5,"中文",null,true],"big":12345678901234567890}}`, "element_id", "元素")
	m, logs := b.answer()
	d := dataOf(t, m)
	if d["n"] != int64(5) {
		t.Errorf("n = %v, want 5 code points", d["n"])
	}
	echo := d["echo"].(map[string]any)
	if fmt.Sprint(echo["a"]) != "[1 2.5 中文 <nil> true]" || echo["big"] != uint64(12345678901234567890) {
		t.Errorf("echo = %#v", echo)
	}
	if len(logs) != 2 {
		t.Fatalf("got %d log frames, want 2", len(logs))
	}
	if l := logs[0]; l.level != "info" || l.msg != "读数 ok element=元素 n=3" || !l.hasID || l.id != 8 || !strings.HasSuffix(l.time, "Z") {
		t.Errorf("log frame %+v", *l)
	}
	if l := logs[1]; l.level != "warning" || l.msg != "warned" || l.id != 8 {
		t.Errorf("log frame %+v", *l)
	}
	b.send("type", "stop")
	code, rest := b.waitExit()
	if code != 0 {
		t.Errorf("exit %d", code)
	}
	// The stop hook's log goes out as a log frame without id.
	if len(rest) != 0 || !b.stopLogged {
		t.Errorf("after stop: %v, stop hook logged: %v", rest, b.stopLogged)
	}
}

func TestChildConfigs(t *testing.T) {
	b := startTestChild(t)
	b.hello(DefaultMaxFrame)
	b.ready()
	for i, raw := range []string{"\x00\xff\xfe\n\r", "", "[1,2]", "42", `{"a":1} x`, "\xef\xbb\xbf{}"} {
		b.task(i, raw)
		m, _ := b.answer()
		d := dataOf(t, m)
		if got, _ := d["raw"].([]byte); string(got) != raw {
			t.Errorf("config %q: raw = %q", raw, got)
		}
		wantOK := raw == "[1,2]" || raw == "42"
		if d["ok"] != wantOK {
			t.Errorf("config %q: ConfigOK = %v", raw, d["ok"])
		}
	}
	b.stdin.Close()
	if code, _ := b.waitExit(); code != 0 {
		t.Errorf("exit %d", code)
	}
}

func TestChildStdoutProtection(t *testing.T) {
	b := startTestChild(t)
	b.hello(DefaultMaxFrame)
	b.ready()
	for i := range 5 {
		b.task(i, `{"i":1,"print":"hello world"}`)
	}
	for range 5 {
		m, _ := b.answer()
		dataOf(t, m)
	}
	b.stdin.Close()
	if code, rest := b.waitExit(); code != 0 || len(rest) != 0 {
		t.Errorf("exit %d, extra %d", code, len(rest))
	}
	errText := b.stderr.String()
	if strings.Count(errText, "hello world\n") != 15 || strings.Count(errText, "sub-hello world") != 5 {
		t.Errorf("printed text did not reach stderr:\n%s", errText)
	}
}

func TestChildErrors(t *testing.T) {
	b := startTestChild(t)
	b.hello(DefaultMaxFrame)
	b.ready()
	b.task(1, `{"fail":"device unreachable"}`)
	b.task(2, `{"fail_detail":"line 3"}`)
	b.task(3, `{"panic":"boom"}`)
	b.task(4, `{"array":1}`)
	b.task(5, `{"struct":1}`)
	b.task(6, `{"text":1}`)
	b.task(7, `{"null":1}`)
	b.task(8, `{"fail_data":1}`)
	b.task(9, `{"fail_bad_data":1}`)
	got := map[uint64]*message{}
	for range 9 {
		m, _ := b.answer()
		got[m.id] = m
	}
	if m := got[1]; m.typ != "error" || m.message != "device unreachable" {
		t.Errorf("fail: %+v", m)
	}
	if m := got[2]; m.typ != "error" || m.message != "explicit" || m.detail != "line 3" {
		t.Errorf("HandlerError: %+v", m)
	}
	if m := got[3]; m.typ != "error" || m.message != "panic: boom" || !strings.Contains(m.detail, "testExecute") {
		t.Errorf("panic: %+v", m)
	}
	// Any value with a JSON form is result data.
	if m := got[4]; m.typ != "result" || fmt.Sprint(m.data) != "[1 2]" {
		t.Errorf("array data: %+v", m)
	}
	if m := got[6]; m.typ != "result" || m.data != "plain text" {
		t.Errorf("text data: %+v", m)
	}
	if m := got[7]; m.typ != "result" || !m.hasData || m.data != nil {
		t.Errorf("Null data: %+v", m)
	}
	// A HandlerError's Data travels as error.data, also when wrapped.
	if m := got[8]; m.typ != "error" || m.message != "reading: out of range" || m.detail != "sensor 3" ||
		!m.hasData || fmt.Sprint(m.data) != "map[reading:120]" {
		t.Errorf("error with data: %+v", m)
	}
	if m := got[9]; m.typ != "error" || m.message != "odd" || m.hasData ||
		!strings.HasPrefix(m.detail, "d\n[flowbridge: the error's Data was left out: ") {
		t.Errorf("error with data that cannot be sent: %+v", m)
	}
	if m := got[1]; m.hasData {
		t.Errorf("an error without data has data: %+v", m)
	}
	if m := got[5]; m.message != "ok" || m.detail != "d" || fmt.Sprint(dataOf(t, m)) != "map[Count:2 name:x]" {
		t.Errorf("struct result: %+v", m)
	}
	b.send("type", "stop")
	if code, _ := b.waitExit(); code != 0 {
		t.Errorf("exit %d", code)
	}
}

func TestChildDebugAndState(t *testing.T) {
	b := startTestChild(t)
	b.hello(DefaultMaxFrame)
	b.ready()
	b.send("type", "state", "connected", false)
	b.send("type", "debug", "id", 9, "config", []byte(`{"i":9}`), "project_id", "p", "future_key", []any{1})
	m, logs := b.answer()
	if dataOf(t, m)["i"] != int64(9) || len(logs) != 1 || logs[0].msg != "debug 9" || logs[0].id != 9 || logs[0].level != "info" {
		t.Errorf("debug: %+v logs %+v", m, logs)
	}
	b.send("type", "state", "connected", true)
	b.send("type", "stop")
	if code, _ := b.waitExit(); code != 0 {
		t.Errorf("exit %d", code)
	}
	if !strings.Contains(b.stderr.String(), "state connected=false\nstate connected=true\n") {
		t.Errorf("state hook: %s", b.stderr)
	}
}

func TestChildStopFinishesInFlight(t *testing.T) {
	for _, how := range []string{"stop", "eof"} {
		t.Run(how, func(t *testing.T) {
			b := startTestChild(t)
			b.hello(DefaultMaxFrame)
			b.ready()
			b.task(1, `{"i":1,"sleep_ms":300}`)
			b.task(2, `{"i":2,"sleep_ms":100}`)
			if how == "stop" {
				b.send("type", "stop")
			} else {
				b.stdin.Close()
			}
			code, rest := b.waitExit()
			if code != 0 {
				t.Errorf("exit %d", code)
			}
			if len(rest) != 2 || rest[0].id != 2 || rest[1].id != 1 || !b.stopLogged {
				t.Errorf("frames after %s: %d", how, len(rest))
			}
			// The stop hook ran after the answers were written.
			if !strings.Contains(b.stderr.String(), "stop hook ran") {
				t.Error("stop hook did not run")
			}
		})
	}
}

// bigBody is the body size of the result frame that {"big": n} makes.
func bigBody(t *testing.T, id uint64, n int) int {
	s := &server{maxFrame: maxMaxFrame}
	b, ok := s.appendResult(nil, id, map[string]any{"s": strings.Repeat("x", n)})
	if !ok {
		t.Fatal(string(b))
	}
	return len(b) - 4
}

func TestChildFrameLimit(t *testing.T) {
	const limit = 2048
	exact := limit - (bigBody(t, 1, 1000) - 1000) // a str 16 header throughout this range
	if bigBody(t, 1, exact) != limit {
		t.Fatalf("no result of exactly %d bytes", limit)
	}
	b := startTestChild(t)
	b.hello(limit)
	b.ready()
	b.task(1, fmt.Sprintf(`{"big":%d}`, exact))
	if m, _ := b.answer(); m.typ != "result" || len(dataOf(t, m)["s"].(string)) != exact {
		t.Errorf("a result of exactly max_frame: %s %q", m.typ, m.message)
	}
	b.task(1, fmt.Sprintf(`{"big":%d}`, exact+1))
	m, _ := b.answer()
	if m.typ != "error" || m.id != 1 || m.detail != "" ||
		m.message != "result too large: 2049 bytes, the limit is 2048 (hello.max_frame); return less data" {
		t.Errorf("one byte over: %s %q", m.typ, m.message)
	}
	b.task(2, `{"big":500}`)
	if m, _ := b.answer(); m.typ != "result" {
		t.Errorf("small result: %s %q", m.typ, m.message)
	}
	// The check is on the msgpack frame: 1900 bytes are 2536 characters of base64, and
	// 1900 U+0001 are 11400 characters of JSON, but both frames fit.
	b.task(3, `{"bin":1900}`)
	if m, _ := b.answer(); m.typ != "result" || len(m.data.([]byte)) != 1900 {
		t.Errorf("bin result: %s %q", m.typ, m.message)
	}
	b.task(4, `{"control":1900}`)
	if m, _ := b.answer(); m.typ != "result" || len(dataOf(t, m)["s"].(string)) != 1900 {
		t.Errorf("control characters: %s %q", m.typ, m.message)
	}
	// An error whose data does not fit goes without it; a log record is cut.
	b.task(5, `{"fail_big_data":5000}`)
	if m, _ := b.answer(); m.typ != "error" || m.message != "big" || m.hasData ||
		!strings.Contains(m.detail, "the error frame is") {
		t.Errorf("error data too large: %s %q %q", m.typ, m.message, m.detail)
	}
	b.task(6, `{"big_log":5000}`)
	m, logs := b.answer()
	if m.typ != "result" || len(logs) != 1 || len(logs[0].msg) >= limit || !strings.HasSuffix(logs[0].msg, "[truncated]") {
		t.Errorf("big log: %s %d", m.typ, len(logs))
	}
	// A frame over the limit from the bridge is a protocol error: non-zero exit.
	b.task(7, strings.Repeat(" ", limit+100))
	code, _ := b.waitExit()
	if code == 0 || !strings.Contains(b.stderr.String(), "frame_too_large") {
		t.Errorf("exit %d, stderr:\n%s", code, b.stderr)
	}
}

// A max_frame above the default holds both ways: a task frame and a result frame
// of 17 MiB each.
func TestChildFrameLimitAboveDefault(t *testing.T) {
	b := startTestChild(t)
	b.hello(20 << 20)
	b.ready()
	b.task(1, fmt.Sprintf(`{"big":%d,"pad":"%s"}`, 17<<20, strings.Repeat("p", 17<<20)))
	if m, _ := b.answer(); m.typ != "result" || len(dataOf(t, m)["s"].(string)) != 17<<20 {
		t.Errorf("17 MiB result: %s %q", m.typ, m.message)
	}
	b.send("type", "stop")
	if code, _ := b.waitExit(); code != 0 {
		t.Errorf("exit %d", code)
	}
}

func TestChildBridgeBreaksProtocol(t *testing.T) {
	b := startTestChild(t)
	b.hello(DefaultMaxFrame)
	b.ready()
	b.stdin.Write([]byte("hello world\n"))
	b.stdin.Close()
	code, _ := b.waitExit()
	if code == 0 || !strings.Contains(b.stderr.String(), "broke the stdio protocol") {
		t.Errorf("exit %d, stderr:\n%s", code, b.stderr)
	}
}

// TestChildRejectsSequenceErrors sends the bridge's frames of every sequence that ends
// in a bridge error to a real child: it must name the kind on stderr and exit non-zero.
// The frames before the child's ready go in one write, the rest in another; the child
// holds every request, so that a duplicate id meets the first one still in flight.
func TestChildRejectsSequenceErrors(t *testing.T) {
	for _, seq := range loadVectors(t).Sequences {
		last := seq.Steps[len(seq.Steps)-1]
		if last.Error == "" || last.From != "bridge" {
			continue
		}
		t.Run(seq.Name, func(t *testing.T) {
			var before, after []byte
			sawHello, sawReady, sawStop := false, false, false
			for _, step := range seq.Steps {
				sawStop = sawStop || step.Event == "stop"
				switch {
				case step.From == "child":
					sawReady = sawReady || step.Event == "ready"
				case sawReady:
					after = append(after, unhex(t, step.Hex)...)
				default:
					sawHello = sawHello || step.Event == "hello"
					before = append(before, unhex(t, step.Hex)...)
				}
			}
			if sawStop {
				t.Skip("after stop the child stops reading: the conn replay covers it")
			}
			if sawHello && !sawReady && last.Value.Type != "hello" {
				t.Skip("this child reads the next frame after writing ready, in state open: the conn replay covers it")
			}
			b := startTestChild(t, "HOLD_REQUESTS=1")
			b.stdin.Write(before)
			if sawReady {
				b.ready()
				b.stdin.Write(after)
			}
			code, _ := b.waitExit()
			want := "flow-bridge protocol error (" + last.Error + ")"
			if code == 0 || !strings.Contains(b.stderr.String(), want) {
				t.Errorf("exit %d, want non-zero and %q on stderr:\n%s", code, want, b.stderr)
			}
		})
	}
}

func TestChildVersionMismatch(t *testing.T) {
	b := startTestChild(t)
	b.send("type", "hello", "protocols", []any{2, 3}, "plugin", "x")
	code, rest := b.waitExit()
	if code == 0 || len(rest) != 0 {
		t.Errorf("exit %d, %d frames", code, len(rest))
	}
	if !strings.Contains(b.stderr.String(), "speaks protocol [1], the bridge offers [2, 3]") {
		t.Errorf("stderr:\n%s", b.stderr)
	}
}

func TestChildStartFails(t *testing.T) {
	b := startTestChild(t, "FAIL_START=1")
	b.hello(DefaultMaxFrame)
	code, rest := b.waitExit()
	if code == 0 || len(rest) != 0 || !strings.Contains(b.stderr.String(), "start failed on purpose") {
		t.Errorf("exit %d, %d frames, stderr:\n%s", code, len(rest), b.stderr)
	}
}

// ---------------------------------------------------------------------------
// The echo example, built and run through its run script.

func echoRun(t *testing.T) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("run is a sh script")
	}
	run, err := filepath.Abs("../../examples/echo/go/run")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(run); err != nil {
		t.Skipf("no echo example: %v", err)
	}
	return run
}

func startEcho(t *testing.T, env ...string) *testBridge {
	cmd := exec.Command(echoRun(t))
	cmd.Dir = t.TempDir() // run must work from any directory
	cmd.Env = append(os.Environ(), env...)
	b := startChild(t, cmd)
	b.hello(DefaultMaxFrame)
	select { // the first run may build the binary
	case m, ok := <-b.frames:
		if !ok || m.typ != "ready" {
			t.Fatalf("no ready from echo: %v", <-b.readErr)
		}
		if m.concurrency < 64 || m.debug != (os.Getenv("ECHO_BREAK") != "no-debug" && !strings.Contains(strings.Join(env, " "), "no-debug")) {
			t.Errorf("ready: concurrency %d debug %v", m.concurrency, m.debug)
		}
	case <-time.After(120 * time.Second):
		t.Fatal("echo did not become ready")
	}
	return b
}

func TestEchoExample(t *testing.T) {
	b := startEcho(t)
	b.task(1, `{"i":1,"sleep_ms":400}`)
	b.task(2, `{"i":2,"payload":"温度传感器","echo":{"x":[1,"中"]},"print":"printed","log":"logged"}`)
	b.task(3, "\x00\xff")
	b.task(4, `{"fail":"nope"}`)
	b.task(5, `{"sleep_ms":30000}`)
	b.send("type", "debug", "id", 6, "config", []byte(`{"i":6}`))
	got := map[uint64]*message{}
	var logs []*message
	for range 5 {
		m, l := b.answer()
		got[m.id] = m
		logs = append(logs, l...)
	}
	b.send("type", "cancel", "id", 5, "reason", "timeout")
	m, _ := b.answer()
	got[m.id] = m
	if d := dataOf(t, got[1]); d["i"] != int64(1) || d["n"] != int64(0) {
		t.Errorf("1: %v", d)
	}
	if d := dataOf(t, got[2]); d["n"] != int64(5) || fmt.Sprint(d["echo"]) != "map[x:[1 中]]" {
		t.Errorf("2: %v", d)
	}
	if d := dataOf(t, got[3]); string(d["raw"].([]byte)) != "\x00\xff" {
		t.Errorf("3: %v", d)
	}
	if m := got[4]; m.typ != "error" || !strings.Contains(m.message, "nope") {
		t.Errorf("4: %+v", m)
	}
	if m := got[5]; m.typ != "error" || m.message != "cancelled" {
		t.Errorf("5: %+v", m)
	}
	if d := dataOf(t, got[6]); d["i"] != int64(6) {
		t.Errorf("6: %v", d)
	}
	var msgs []string
	for _, l := range logs {
		msgs = append(msgs, fmt.Sprintf("%d:%s:%s", l.id, l.level, l.msg))
	}
	if s := strings.Join(msgs, ","); !strings.Contains(s, "2:info:logged") || !strings.Contains(s, "6:info:debug 6") {
		t.Errorf("logs: %s", s)
	}
	b.send("type", "stop")
	if code, _ := b.waitExit(); code != 0 {
		t.Errorf("exit %d", code)
	}
	if !strings.Contains(b.stderr.String(), "printed") {
		t.Errorf("print did not reach stderr: %s", b.stderr)
	}
}

func TestEchoBreaks(t *testing.T) {
	t.Run("count-bytes", func(t *testing.T) {
		b := startEcho(t, "ECHO_BREAK=count-bytes")
		b.task(1, `{"payload":"中文"}`)
		if m, _ := b.answer(); dataOf(t, m)["n"] != int64(6) {
			t.Errorf("n = %v", dataOf(t, m)["n"])
		}
		b.stdin.Close()
		b.waitExit()
	})
	t.Run("no-debug", func(t *testing.T) {
		b := startEcho(t, "ECHO_BREAK=no-debug")
		b.stdin.Close()
		b.waitExit()
	})
	t.Run("ignore-cancel", func(t *testing.T) {
		b := startEcho(t, "ECHO_BREAK=ignore-cancel")
		b.task(1, `{"i":1,"sleep_ms":700}`)
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		b.send("type", "cancel", "id", 1)
		m, _ := b.answer()
		if time.Since(start) < 400*time.Millisecond || m.typ != "result" {
			t.Errorf("answered %s after %v", m.typ, time.Since(start))
		}
		b.stdin.Close()
		b.waitExit()
	})
	t.Run("hang-on-stop", func(t *testing.T) {
		b := startEcho(t, "ECHO_BREAK=hang-on-stop")
		b.send("type", "stop")
		done := make(chan struct{})
		go func() { b.cmd.Wait(); close(done) }()
		select {
		case <-done:
			t.Error("exited despite hang-on-stop")
		case <-time.After(500 * time.Millisecond):
		}
		b.cmd.Process.Kill()
		<-done
	})
}
