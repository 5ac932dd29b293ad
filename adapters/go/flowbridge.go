// Package flowbridge is the Go adapter of flow-bridge: it turns a Go function into a
// plugin of the flow engine. flow-bridge starts the program as a long-lived child and
// talks to it with msgpack frames over its stdin and stdout; this package speaks that
// protocol (version 1, see SPEC.md) so that a handler only deals with requests.
//
//	func main() {
//		flowbridge.Run(flowbridge.Plugin{
//			Name: "doubler",
//			Execute: func(ctx context.Context, r *flowbridge.Request) (any, error) {
//				var cfg struct{ X float64 }
//				if err := r.DecodeConfig(&cfg); err != nil {
//					return nil, err
//				}
//				r.Log.Info("doubling", "x", cfg.X)
//				return map[string]any{"doubled": 2 * cfg.X}, nil
//			},
//		})
//	}
//
// Each request runs in its own goroutine, with a context that is cancelled when the
// bridge sends cancel. Serve takes the protocol off file descriptors 0 and 1 before
// any handler runs, so fmt.Println, os.Stdout and child processes write to stderr
// (which the bridge forwards to its log) and cannot corrupt the frames.
package flowbridge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
)

// Handler handles one task or debug request. Its first result becomes the result's
// data, any value with a JSON form: a Go map, a struct (written as encoding/json would,
// as a map of its fields), a Map, a slice, a string, a number, a bool, a
// json.RawMessage, or Null (JSON null). nil, like a nil map, slice or pointer, means an
// empty map, as in the vendor's Go SDK. Return a Reply or *Reply to set the message
// and detail too.
//
// A non-nil error becomes an error answer: its Error() is the message, and its
// "%+v" form (a stack trace for errors packages that keep one) the detail when that
// says more. Use *HandlerError to choose both. When the request was cancelled, a
// returned context.Canceled becomes the message "cancelled". A panic becomes an error
// answer with the stack as detail; it never takes the process down.
type Handler func(ctx context.Context, r *Request) (any, error)

// Plugin describes a handler and its hooks. Only Execute is required.
type Plugin struct {
	// Execute handles task requests (the engine's FlowRequest).
	Execute Handler
	// Debug handles debug requests (the engine's DebugRequest). When nil, the
	// child tells the bridge it takes no debug requests.
	Debug Handler
	// Start runs once, after the bridge's hello and before the child declares itself
	// ready. An error (or panic) ends Serve with that error before any request.
	Start func() error
	// Stop runs once at the end: after stop or end of input, when every request in
	// flight has been answered.
	Stop func()
	// OnConnectionStateChanged is told when the bridge's link to the engine goes up
	// (true) or down (false). Calls come in order, from one goroutine.
	OnConnectionStateChanged func(connected bool)
	// Concurrency is how many requests the bridge may have in flight at once,
	// 1..65536; 0 means 64.
	Concurrency int
	// Name is the handler's own plugin name: the bridge registers under it when no
	// name is configured, and shows it in its logs.
	Name string
	// PluginType is the plugin type the handler declares (PluginService or
	// PluginUser), used when none is configured; "" declares none.
	PluginType PluginType
	// Version describes the handler in the bridge's logs.
	Version string
}

// PluginType is how the engine treats a plugin: a service task or a user task.
type PluginType string

// The plugin types of SPEC section 3 (hello.plugin_type, ready.plugin_type).
const (
	PluginService PluginType = "service"
	PluginUser    PluginType = "user"
)

func (t PluginType) valid() bool { return t == PluginService || t == PluginUser }

// Null is result data that the engine gets as JSON null. (A nil result means an
// empty map instead, as in the vendor's Go SDK.)
var Null = null{}

type null struct{}

// DefaultConcurrency is the concurrency announced when Plugin.Concurrency is 0.
const DefaultConcurrency = 64

// Reply lets a handler set the message and detail of its answer along with its data.
type Reply struct {
	Data    any    // the result data; see Handler
	Message string // a short success message (the engine's info)
	Detail  string // more detail (the engine's detail)
}

// Result is the former name of Reply.
//
// Deprecated: use Reply. The old name clashed with the protocol's result message.
type Result = Reply

// HandlerError is an error with an explicit message and detail for the error answer,
// and optionally a value that goes with the failure.
type HandlerError struct {
	Message string
	Detail  string
	// Data is a value that goes with the failure (any value a result may hold): for a
	// debug request the bridge shows it as the response's value. nil means none.
	Data any
	Err  error // an optional cause, for errors.Is and errors.As
}

func (e *HandlerError) Error() string { return e.Message }
func (e *HandlerError) Unwrap() error { return e.Err }

// Errorf returns a *HandlerError whose message is formatted as fmt.Sprintf does.
func Errorf(format string, args ...any) *HandlerError {
	err := fmt.Errorf(format, args...)
	return &HandlerError{Message: err.Error(), Err: errors.Unwrap(err)}
}

// PanicError is what a panicking handler's answer is built from.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

func newPanicError(v any) *PanicError {
	return &PanicError{Value: v, Stack: debug.Stack()}
}

// Run is Serve for main functions: when Serve fails it prints the error to stderr
// and exits with status 1; otherwise it returns, and main should return too.
func Run(p Plugin) {
	if err := Serve(p); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
