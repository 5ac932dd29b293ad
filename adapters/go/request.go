package flowbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Request is one request from the engine: a task (FlowRequest) or, when IsDebug is
// set, a debug request (DebugRequest). Its fields must not be changed. A handler
// answers it by returning data, a Reply, or an error.
type Request struct {
	ID         uint64 // the bridge's id of the request, unique among those in flight
	IsDebug    bool   // a debug request rather than a task
	RawConfig  []byte // the flow node's configuration, the engine's bytes unchanged
	ProjectID  string
	FlowID     string
	Job        string // empty for debug requests
	ElementID  string
	ElementJob string
	// Timeout is the time the bridge allows for this request; 0 means none. When it
	// runs out the bridge cancels the request (the handler's ctx is cancelled).
	Timeout time.Duration
	// Log writes log records tied to this request (log frames carrying its id).
	// slog's Warn level is the protocol's "warning".
	Log *slog.Logger

	s        *server
	ctx      context.Context
	handler  Handler
	cancel   context.CancelFunc
	reason   string // why the bridge cancelled; guarded by s.mu
	answered atomic.Bool
	cfgOnce  sync.Once
	cfg      any
	cfgOK    bool
	lh       logHandler
}

func (r *Request) parseConfig() {
	r.cfgOnce.Do(func() {
		if v, err := parseJSON(r.RawConfig); err == nil {
			r.cfg, r.cfgOK = v, true
		}
	})
}

// Config returns the config parsed as JSON: map[string]any, []any, string,
// json.Number (numbers stay exact), bool, or nil. It is nil as well when the config
// is not UTF-8 JSON; ConfigOK tells the two apart, RawConfig has the bytes.
func (r *Request) Config() any {
	r.parseConfig()
	return r.cfg
}

// ConfigOK reports whether the config is valid UTF-8 JSON.
func (r *Request) ConfigOK() bool {
	r.parseConfig()
	return r.cfgOK
}

// ConfigMap returns the config when it is a JSON object, else nil.
func (r *Request) ConfigMap() map[string]any {
	m, _ := r.Config().(map[string]any)
	return m
}

// ConfigText returns the config as text, with invalid UTF-8 replaced by U+FFFD.
func (r *Request) ConfigText() string {
	return strings.ToValidUTF8(string(r.RawConfig), "\uFFFD")
}

// DecodeConfig parses the JSON config into v, as json.Unmarshal does.
func (r *Request) DecodeConfig(v any) error {
	if !utf8.Valid(r.RawConfig) {
		return fmt.Errorf("flowbridge: the config is not UTF-8 JSON")
	}
	return json.Unmarshal(r.RawConfig, v)
}

// Logf writes a log record tied to this request at level (slog.LevelDebug, Info,
// Warn or Error) with a message formatted as fmt.Sprintf does.
func (r *Request) Logf(level slog.Level, format string, args ...any) {
	r.s.log(levelName(level), fmt.Sprintf(format, args...), r.ID, !r.answered.Load(), time.Now())
}

// Cancelled reports whether the bridge has cancelled this request, and why
// ("timeout" or "shutdown"). The handler's ctx is done from that moment on.
func (r *Request) Cancelled() (bool, string) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.reason != "", r.reason
}

// Task is the former name of Request.
//
// Deprecated: use Request. Every adapter now calls what a handler gets a request and
// what it returns a reply.
type Task = Request
