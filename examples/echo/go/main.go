// Command echo is the Go echo example of flow-bridge: the handler that SPEC.md's
// "echo contract" describes, which the conformance suite drives.
//
// ECHO_BREAK breaks one behaviour on purpose (SPEC.md, the ECHO_BREAK table):
// ignore-cancel, count-bytes, no-debug or hang-on-stop.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
	"unicode/utf8"

	flowbridge "github.com/flow-bridge/flow-bridge/adapters/go"
)

var brk = os.Getenv("ECHO_BREAK")

func execute(ctx context.Context, r *flowbridge.Request) (any, error) {
	cfg := r.ConfigMap()
	if cfg == nil { // not a JSON object
		return map[string]any{"raw": r.RawConfig}, nil
	}
	if msg, ok := cfg["fail"].(string); ok {
		return nil, errors.New(msg)
	}
	if s, ok := cfg["print"].(string); ok {
		fmt.Println(s) // lands on stderr: the adapter protects the frames
	}
	if s, ok := cfg["log"].(string); ok {
		r.Log.Info(s)
	}
	if n, ok := cfg["sleep_ms"].(json.Number); ok {
		ms, _ := n.Float64()
		d := time.Duration(ms * float64(time.Millisecond))
		if brk == "ignore-cancel" {
			time.Sleep(d)
		} else {
			timer := time.NewTimer(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return nil, ctx.Err() // answered as the error "cancelled"
			}
		}
	}
	n := 0
	if p, ok := cfg["payload"].(string); ok {
		if brk == "count-bytes" {
			n = len(p)
		} else {
			n = utf8.RuneCountInString(p)
		}
	}
	data := map[string]any{"i": cfg["i"], "n": n}
	if echo, ok := cfg["echo"]; ok {
		data["echo"] = echo
	}
	return data, nil
}

func debug(ctx context.Context, r *flowbridge.Request) (any, error) {
	var i any
	if cfg := r.ConfigMap(); cfg != nil {
		i = cfg["i"]
	}
	text, _ := json.Marshal(i) // json.Number 3 -> 3, nil -> null
	if s, ok := i.(string); ok {
		text = []byte(s)
	}
	r.Log.Info("debug " + string(text))
	return execute(ctx, r)
}

func main() {
	p := flowbridge.Plugin{
		Execute:     execute,
		Debug:       debug,
		Concurrency: 64,
		Name:        "echo",
		Version:     "1.0.0",
	}
	if brk == "no-debug" {
		p.Debug = nil
	}
	if brk == "hang-on-stop" {
		p.Stop = func() {
			for {
				time.Sleep(time.Hour)
			}
		}
	}
	flowbridge.Run(p) // returns after stop or end of input: exit status 0
}
