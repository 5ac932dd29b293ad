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

// Task is one request from the engine: a task (FlowRequest) or, when IsDebug is
// set, a debug request (DebugRequest). Its fields must not be changed.
type Task struct {
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

func (t *Task) parseConfig() {
	t.cfgOnce.Do(func() {
		if v, err := parseJSON(t.RawConfig); err == nil {
			t.cfg, t.cfgOK = v, true
		}
	})
}

// Config returns the config parsed as JSON: map[string]any, []any, string,
// json.Number (numbers stay exact), bool, or nil. It is nil as well when the config
// is not UTF-8 JSON; ConfigOK tells the two apart, RawConfig has the bytes.
func (t *Task) Config() any {
	t.parseConfig()
	return t.cfg
}

// ConfigOK reports whether the config is valid UTF-8 JSON.
func (t *Task) ConfigOK() bool {
	t.parseConfig()
	return t.cfgOK
}

// ConfigMap returns the config when it is a JSON object, else nil.
func (t *Task) ConfigMap() map[string]any {
	m, _ := t.Config().(map[string]any)
	return m
}

// ConfigText returns the config as text, with invalid UTF-8 replaced by U+FFFD.
func (t *Task) ConfigText() string {
	return strings.ToValidUTF8(string(t.RawConfig), "\uFFFD")
}

// DecodeConfig parses the JSON config into v, as json.Unmarshal does.
func (t *Task) DecodeConfig(v any) error {
	if !utf8.Valid(t.RawConfig) {
		return fmt.Errorf("flowbridge: the config is not UTF-8 JSON")
	}
	return json.Unmarshal(t.RawConfig, v)
}

// Logf writes a log record tied to this request at level (slog.LevelDebug, Info,
// Warn or Error) with a message formatted as fmt.Sprintf does.
func (t *Task) Logf(level slog.Level, format string, args ...any) {
	t.s.log(levelName(level), fmt.Sprintf(format, args...), t.ID, !t.answered.Load(), time.Now())
}

// Cancelled reports whether the bridge has cancelled this request, and why
// ("timeout" or "shutdown"). The handler's ctx is done from that moment on.
func (t *Task) Cancelled() (bool, string) {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return t.reason != "", t.reason
}
