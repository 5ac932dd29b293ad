package flowbridge

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Serve runs the plugin until the bridge sends stop or closes the child's stdin:
// it answers the bridge's hello, runs requests, and at the end waits for the
// requests in flight, writes their answers, runs the Stop hook and returns nil, so
// that main can return and the process exits with status 0.
//
// It returns an error when the plugin cannot start (the Start hook failed, or the
// bridge offers no protocol version this adapter speaks) or when the bridge breaks
// the protocol; the caller should then print it to stderr and exit non-zero.
//
// Serve must be called once per process: it takes the protocol off stdin and stdout
// first of all (see the package documentation).
func Serve(p Plugin) error {
	if err := p.check(); err != nil {
		return err
	}
	in, out, err := takeStdio()
	if err != nil {
		return err
	}
	return serve(p, in, out)
}

// ServeIO is Serve over the given streams instead of the process's stdin and stdout,
// which it leaves alone. It is meant for tests of a handler.
func ServeIO(p Plugin, in io.Reader, out io.Writer) error {
	if err := p.check(); err != nil {
		return err
	}
	return serve(p, in, out)
}

func (p *Plugin) check() error {
	if p.Execute == nil {
		return errors.New("flowbridge: Plugin.Execute is nil")
	}
	if p.Concurrency < 0 || p.Concurrency > maxConcurrency {
		return fmt.Errorf("flowbridge: Plugin.Concurrency must be in 1..%d (0 means %d), got %d",
			maxConcurrency, DefaultConcurrency, p.Concurrency)
	}
	if p.PluginType != "" && !p.PluginType.valid() {
		return fmt.Errorf("flowbridge: Plugin.PluginType must be PluginService, PluginUser or empty, got %q", p.PluginType)
	}
	return nil
}

// frameBuf holds one or more encoded frames on their way to the writer. A frameBuf
// with sync set is a flush request instead: the writer flushes, then closes sync;
// one with close set makes the writer flush and end.
type frameBuf struct {
	b     []byte
	sync  chan struct{}
	close bool
}

const maxPooledBuf = 64 << 10

var bufPool = sync.Pool{New: func() any { return &frameBuf{b: make([]byte, 0, 512)} }}

func getBuf() *frameBuf { return bufPool.Get().(*frameBuf) }

func putBuf(f *frameBuf) {
	if cap(f.b) <= maxPooledBuf {
		f.b = f.b[:0]
		bufPool.Put(f)
	}
}

type server struct {
	p        Plugin
	out      io.Writer
	maxFrame uint64 // set from hello before any request starts

	queue      chan *frameBuf
	writerDone chan struct{}
	ready      atomic.Bool // whether conn lets log frames out yet, for logs from any goroutine

	mu       sync.Mutex
	conn     *conn // the protocol's rules: who may send what, when, for which id
	inflight map[uint64]*Request
	wg       sync.WaitGroup // requests in flight

	work chan *Request // unbuffered: a send succeeds only when a worker is idle
	quit chan struct{} // closed at the end, to stop the idle workers

	states      chan bool
	statesEnd   chan struct{}
	writeFailed bool // writer goroutine only
}

func serve(p Plugin, in io.Reader, out io.Writer) error {
	s := &server{
		p:          p,
		out:        out,
		maxFrame:   DefaultMaxFrame,
		queue:      make(chan *frameBuf, 4096),
		writerDone: make(chan struct{}),
		conn:       newConn(roleChild),
		inflight:   make(map[uint64]*Request),
		work:       make(chan *Request),
	}
	br := bufio.NewReaderSize(in, 64<<10)

	// 1. hello. Nothing may be written before it has been read.
	body, err := readFrame(br, DefaultMaxFrame)
	if err == io.EOF {
		return nil // the bridge went away before saying anything
	}
	if err != nil {
		return bridgeError(err)
	}
	var m message
	if err := decodeMessage(body, &m); err != nil {
		return bridgeError(err)
	}
	if err := s.conn.receive(&m); err != nil { // the first frame must be hello
		return bridgeError(err)
	}
	if !slices.Contains(m.protocols, ProtocolVersion) {
		advice := "upgrade flow-bridge"
		if slices.Max(m.protocols) > ProtocolVersion {
			advice = "upgrade the flow-bridge Go adapter (github.com/flow-bridge/flow-bridge/adapters/go)"
		}
		return fmt.Errorf("flow-bridge adapter speaks protocol [%d], the bridge offers %s: %s",
			ProtocolVersion, formatList(m.protocols), advice)
	}
	s.maxFrame = m.maxFrame

	// 2. Start hook, then ready.
	if p.Start != nil {
		if err := callStart(p.Start); err != nil {
			return fmt.Errorf("flowbridge: start hook failed: %w", err)
		}
	}
	concurrency := uint64(p.Concurrency)
	if concurrency == 0 {
		concurrency = DefaultConcurrency
	}
	if p.OnConnectionStateChanged != nil {
		s.states = make(chan bool, 64)
		s.statesEnd = make(chan struct{})
		go s.stateLoop()
	}
	prev := current.Swap(s)
	defer current.CompareAndSwap(s, prev)
	go s.writeLoop()
	if err := s.conn.send(specReady, 0, ProtocolVersion, nil); err != nil {
		return fmt.Errorf("flowbridge: %w", err) // our own mistake: the version is one hello offered
	}
	f := getBuf()
	f.b = appendReady(f.b[:0], ProtocolVersion, concurrency, p.Debug != nil, p.Name, p.Version, p.PluginType)
	s.send(f)
	s.ready.Store(s.conn.mayLog())

	// 3. Requests, until stop or end of input.
	err = s.readLoop(br)
	close(s.work) // only readLoop sends on it
	if err != nil {
		s.cancelAll("shutdown")
		return bridgeError(err)
	}

	// 4. Finish what is in flight, answer it, run the stop hook.
	s.wg.Wait()
	if s.states != nil {
		close(s.states)
		<-s.statesEnd
	}
	s.flush()
	if p.Stop != nil {
		callStop(p.Stop)
	}
	s.close()
	return nil
}

func formatList(v []uint64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprint(x)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// bridgeError explains that the bridge's output broke the protocol.
func bridgeError(err error) error {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return fmt.Errorf("flowbridge: the bridge broke the stdio protocol: %w", err)
	}
	return fmt.Errorf("flowbridge: reading from the bridge: %w", err)
}

func callStart(start func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			pe := newPanicError(v)
			err = fmt.Errorf("%w\n%s", pe, pe.Stack)
		}
	}()
	return start()
}

func callStop(stop func()) {
	defer func() {
		if v := recover(); v != nil {
			pe := newPanicError(v)
			fmt.Fprintf(os.Stderr, "flowbridge: stop hook %v\n%s", pe, pe.Stack)
		}
	}()
	stop()
}

func (s *server) readLoop(br *bufio.Reader) error {
	for {
		body, err := readFrame(br, s.maxFrame)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			var pe *ProtocolError
			if errors.As(err, &pe) {
				return err
			}
			// An I/O error on stdin: the bridge is gone; end as at end of input.
			fmt.Fprintf(os.Stderr, "flowbridge: reading from the bridge: %v; stopping\n", err)
			return nil
		}
		var m message
		if err := decodeMessage(body, &m); err != nil {
			return err
		}
		// What passes the conn is a bridge message in its turn: after ready, before stop,
		// a request id not in flight.
		s.mu.Lock()
		err = s.conn.receive(&m)
		s.mu.Unlock()
		if err != nil {
			return err
		}
		switch m.typ {
		case "task":
			s.dispatch(&m, s.p.Execute, false)
		case "debug":
			s.dispatch(&m, s.p.Debug, true)
		case "cancel":
			s.cancel(m.id, m.reason)
		case "state":
			if s.states != nil {
				s.states <- m.connected
			}
		case "stop":
			return nil
		}
	}
}

func (s *server) stateLoop() {
	defer close(s.statesEnd)
	for connected := range s.states {
		func() {
			defer func() {
				if v := recover(); v != nil {
					pe := newPanicError(v)
					fmt.Fprintf(os.Stderr, "flowbridge: OnConnectionStateChanged %v\n%s", pe, pe.Stack)
				}
			}()
			s.p.OnConnectionStateChanged(connected)
		}()
	}
}

func (s *server) dispatch(m *message, h Handler, isDebug bool) {
	timeout := time.Duration(math.MaxInt64)
	if m.timeoutMS < uint64(math.MaxInt64/int64(time.Millisecond)) {
		timeout = time.Duration(m.timeoutMS) * time.Millisecond
	}
	t := &Request{
		ID:         m.id,
		IsDebug:    isDebug,
		RawConfig:  m.config,
		ProjectID:  m.projectID,
		FlowID:     m.flowID,
		Job:        m.job,
		ElementID:  m.elementID,
		ElementJob: m.elementJob,
		Timeout:    timeout,
		s:          s,
	}
	t.lh.t = t
	t.Log = slog.New(&t.lh)
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	s.mu.Lock()
	s.inflight[t.ID] = t // conn has refused an id in flight already
	s.mu.Unlock()
	s.wg.Add(1)
	t.ctx, t.handler = ctx, h
	select {
	case s.work <- t: // an idle worker takes it
	default:
		go s.worker(t)
	}
}

// worker runs requests one after another. Workers are kept for reuse, so that a
// request does not pay for a new goroutine growing its stack again.
func (s *server) worker(t *Request) {
	for {
		s.run(t.ctx, t, t.handler)
		var ok bool
		if t, ok = <-s.work; !ok {
			return
		}
	}
}

func (s *server) cancel(id uint64, reason string) {
	s.mu.Lock()
	t := s.inflight[id]
	if t != nil && t.reason == "" {
		if reason == "" {
			reason = "cancelled"
		}
		t.reason = reason
	}
	s.mu.Unlock()
	if t != nil {
		t.cancel() // a cancel for an id already answered is ignored (SPEC 2.4)
	}
}

func (s *server) cancelAll(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.inflight {
		if t.reason == "" {
			t.reason = reason
		}
		t.cancel()
	}
}

func (s *server) run(ctx context.Context, t *Request, h Handler) {
	defer s.wg.Done()
	data, err := callHandler(ctx, t, h)
	spec := specResult
	if err != nil {
		spec = specError
	}
	s.mu.Lock()
	delete(s.inflight, t.ID)
	reason := t.reason
	refused := s.conn.send(spec, t.ID, 0, nil) // the id leaves the requests in flight
	s.mu.Unlock()
	t.answered.Store(true)
	t.cancel()
	if refused != nil { // cannot happen: every request is answered once, here
		fmt.Fprintf(os.Stderr, "flowbridge: internal error, answer not sent: %v\n", refused)
		return
	}
	s.answer(t.ID, data, err, reason)
}

func callHandler(ctx context.Context, t *Request, h Handler) (data any, err error) {
	defer func() {
		if v := recover(); v != nil {
			data, err = nil, newPanicError(v)
		}
	}()
	if h == nil {
		return nil, &HandlerError{Message: "this handler takes no debug requests"}
	}
	return h(ctx, t)
}

// answer writes the one answer of request id.
func (s *server) answer(id uint64, data any, err error, reason string) {
	f := getBuf()
	if err == nil {
		var ok bool
		if f.b, ok = s.appendResult(f.b[:0], id, data); ok {
			s.send(f)
			return
		}
		err = resultError(f.b) // appendResult left the reason there
	}
	message, detail := errorText(err, reason)
	if data, ok := errorData(err); ok {
		var encErr error
		f.b, encErr = appendErrorData(f.b[:0], id, message, detail, data)
		if n := uint64(len(f.b) - 4); encErr == nil && n <= s.maxFrame {
			s.send(f)
			return
		} else if encErr == nil {
			encErr = fmt.Errorf("the error frame is %d bytes with it, the limit is %d (hello.max_frame)", n, s.maxFrame)
		}
		// The failure is still answered, without the value, saying why.
		detail = strings.TrimPrefix(detail+"\n", "\n") + "[flowbridge: the error's Data was left out: " + encErr.Error() + "]"
	}
	f.b = appendError(f.b[:0], id, message, detail)
	if uint64(len(f.b)-4) > s.maxFrame {
		detail = truncate(detail, int(s.maxFrame)/2)
		message = truncate(message, int(s.maxFrame)/4)
		f.b = appendError(f.b[:0], id, message, detail)
	}
	s.send(f)
}

// errorData returns the Data of the *HandlerError in err's chain, if it has one.
func errorData(err error) (data any, ok bool) {
	defer func() {
		if recover() != nil {
			data, ok = nil, false // a broken error (a typed nil) carries no data
		}
	}()
	var he *HandlerError
	if errors.As(err, &he) && he != nil && he.Data != nil {
		return he.Data, true
	}
	return nil, false
}

// appendResult appends the result frame. When the data cannot be sent it returns
// false, and b holds the text of an error to answer with instead.
func (s *server) appendResult(b []byte, id uint64, v any) (out []byte, ok bool) {
	var message, detail string
	switch r := v.(type) {
	case Reply:
		v, message, detail = r.Data, r.Message, r.Detail
	case *Reply:
		if r != nil {
			v, message, detail = r.Data, r.Message, r.Detail
		} else {
			v = nil
		}
	}
	defer func() {
		if p := recover(); p != nil {
			pe := newPanicError(p)
			out, ok = append(b[:0], fmt.Sprintf("%s while encoding the result data\n%s", pe, pe.Stack)...), false
		}
	}()
	b, start := appendResultHead(b, id)
	at := len(b)
	if v == nil {
		b = append(b, 0x80)
	} else {
		var enc encoder
		var err error
		if b, err = enc.appendValue(b, v, 0); err != nil {
			return append(b[:0], "cannot encode the result data: "+err.Error()...), false
		}
		if b[at] == 0xc0 && !explicitNull(v) {
			b[at] = 0x80 // a nil map, slice or pointer means {}, as a nil result does
		}
	}
	b = appendResultTail(b, start, message, detail)
	if n := uint64(len(b) - start); n > s.maxFrame {
		return append(b[:0], tooLargeMessage(n, s.maxFrame)...), false
	}
	return b, true
}

// explicitNull reports whether v asks for JSON null rather than nothing.
func explicitNull(v any) bool {
	switch v.(type) {
	case null, json.RawMessage:
		return true
	}
	return false
}

func resultError(b []byte) error {
	msg, detail, _ := strings.Cut(string(b), "\n")
	return &HandlerError{Message: msg, Detail: detail}
}

// errorText turns a handler's error into the message and detail of an error answer.
// It survives a broken error (an Error method that panics, a typed nil).
func errorText(err error, reason string) (message, detail string) {
	defer func() {
		if v := recover(); v != nil {
			message, detail = fmt.Sprintf("%T (its Error method panicked: %v)", err, v), ""
		}
	}()
	var he *HandlerError
	var pe *PanicError
	switch {
	case errors.As(err, &pe) && pe != nil:
		return pe.Error(), string(pe.Stack)
	case reason != "" && errors.Is(err, context.Canceled):
		return "cancelled", "cancelled by the bridge: " + reason
	}
	message = err.Error()
	if message == "" {
		message = fmt.Sprintf("%T", err)
	}
	if errors.As(err, &he) && he != nil {
		// Wrapping a HandlerError adds to its message; its detail is kept.
		return message, he.Detail
	}
	if full := fmt.Sprintf("%+v", err); full != message {
		detail = full
	}
	return message, detail
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + " [truncated]"
}

// log writes one log frame; id is left out when hasID is false.
func (s *server) log(level, msg string, id uint64, hasID bool, when time.Time) {
	if !s.ready.Load() {
		writeStderrLog(level, msg)
		return
	}
	if limit := int(s.maxFrame) - 128; len(msg) > limit {
		msg = truncate(msg, limit-16)
	}
	var ts [32]byte
	f := getBuf()
	f.b = appendLog(f.b[:0], level, msg, id, hasID, string(appendLogTime(ts[:0], when)))
	s.send(f)
}

// send hands a frame to the writer; after the writer has ended it is dropped.
func (s *server) send(f *frameBuf) {
	s.queue <- f
}

// flush waits until every frame sent so far has been written.
func (s *server) flush() {
	done := make(chan struct{})
	s.send(&frameBuf{sync: done})
	select {
	case <-done:
	case <-s.writerDone:
	}
}

// close flushes and ends the writer. Frames sent later (a goroutine the handler
// left behind, logging) are dropped.
func (s *server) close() {
	s.send(&frameBuf{close: true})
	<-s.writerDone
}

// writeLoop is the one writer of frames. It writes into a buffer and flushes it
// whenever it has nothing more to write, so that frames that pile up while the
// pipe is busy leave in one write.
func (s *server) writeLoop() {
	defer func() {
		close(s.writerDone)
		// Drop whatever comes later, so that a late sender never blocks.
		for f := range s.queue {
			if f.sync != nil {
				close(f.sync)
			}
		}
	}()
	w := bufio.NewWriterSize(s.out, 64<<10)
	var failed error
	for f := range s.queue {
		switch {
		case f.sync != nil:
			if failed == nil {
				failed = w.Flush()
			}
			close(f.sync)
			continue
		case f.close:
			if failed == nil {
				w.Flush()
			}
			return
		}
		if failed == nil {
			_, failed = w.Write(f.b)
		}
		putBuf(f)
		if failed == nil && len(s.queue) == 0 {
			failed = w.Flush()
		}
		if failed != nil && !s.writeFailed {
			s.writeFailed = true
			fmt.Fprintf(os.Stderr, "flowbridge: cannot write to the bridge (%v); dropping frames\n", failed)
		}
	}
}
