package flowbridge

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

// current is the server that Serve runs, for Logger.
var current atomic.Pointer[server]

var processLogger = slog.New(&logHandler{})

// Logger returns a logger whose records become log frames tied to no request. While
// Serve is not running, or before the bridge's hello has been answered, records go
// to stderr as text lines instead (the bridge forwards stderr to its log too).
func Logger() *slog.Logger { return processLogger }

func levelName(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warning"
	default:
		return "error"
	}
}

// logHandler is a slog.Handler writing log frames. t is nil for the process logger.
type logHandler struct {
	t      *Request
	attrs  []byte // preformatted " key=value" pairs from WithAttrs
	prefix string // group prefix, "a.b."
}

func (h *logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	buf := make([]byte, 0, len(r.Message)+len(h.attrs)+64)
	buf = append(buf, r.Message...)
	buf = append(buf, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		buf = appendAttr(buf, h.prefix, a)
		return true
	})
	msg := string(buf)
	level := levelName(r.Level)
	if h.t != nil {
		h.t.s.log(level, msg, h.t.ID, !h.t.answered.Load(), r.Time)
		return nil
	}
	s := current.Load()
	if s == nil || !s.ready.Load() {
		writeStderrLog(level, msg)
		return nil
	}
	s.log(level, msg, 0, false, r.Time)
	return nil
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]byte(nil), h.attrs...)
	for _, a := range attrs {
		n.attrs = appendAttr(n.attrs, h.prefix, a)
	}
	return &n
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.prefix = h.prefix + name + "."
	return &n
}

// appendAttr writes " key=value" as slog's TextHandler would.
func appendAttr(buf []byte, prefix string, a slog.Attr) []byte {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return buf
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			buf = appendAttr(buf, p, g)
		}
		return buf
	}
	buf = append(buf, ' ')
	buf = appendMaybeQuoted(buf, prefix+a.Key)
	buf = append(buf, '=')
	var s string
	switch a.Value.Kind() {
	case slog.KindTime:
		s = a.Value.Time().Format(time.RFC3339Nano)
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			s = err.Error()
		} else {
			s = fmt.Sprint(a.Value.Any())
		}
	default:
		s = a.Value.String()
	}
	return appendMaybeQuoted(buf, s)
}

func appendMaybeQuoted(buf []byte, s string) []byte {
	if needsQuoting(s) {
		return strconv.AppendQuote(buf, s)
	}
	return append(buf, s...)
}

func needsQuoting(s string) bool {
	if s == "" {
		return true
	}
	for _, r := range s {
		if r == ' ' || r == '=' || r == '"' || r == utf8.RuneError || !unicode.IsPrint(r) {
			return true
		}
	}
	return false
}

func writeStderrLog(level, msg string) {
	fmt.Fprintf(os.Stderr, "%s %s\n", level, msg)
}

// appendLogTime writes t as RFC 3339 in UTC with milliseconds, as the bridge does.
func appendLogTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	return t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
}
