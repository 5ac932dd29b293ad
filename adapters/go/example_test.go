package flowbridge_test

import (
	"context"
	"errors"
	"time"

	flowbridge "github.com/flow-bridge/flow-bridge/adapters/go"
)

// The handler of the README.
func Example() {
	flowbridge.Run(flowbridge.Plugin{
		Name:    "doubler",
		Version: "1.0.0",
		Execute: func(ctx context.Context, r *flowbridge.Request) (any, error) {
			var cfg struct{ X float64 }
			if err := r.DecodeConfig(&cfg); err != nil {
				return nil, &flowbridge.HandlerError{Message: "config must be JSON like {\"x\": 2}", Detail: err.Error()}
			}
			r.Log.Info("doubling", "x", cfg.X) // a log frame tied to this request
			select {
			case <-time.After(10 * time.Millisecond): // pretend to work
			case <-ctx.Done(): // the bridge cancelled the request
				return nil, ctx.Err()
			}
			return map[string]any{"doubled": 2 * cfg.X}, nil
		},
	})
}

// A handler that sets the answer's message and keeps the order of its keys.
func ExampleReply() {
	_ = func(ctx context.Context, r *flowbridge.Request) (any, error) {
		if r.ConfigMap() == nil {
			return nil, errors.New("config must be a JSON object")
		}
		return flowbridge.Reply{
			Data:    flowbridge.Map{{Key: "b", Value: 1}, {Key: "a", Value: 2}},
			Message: "read 2 registers",
		}, nil
	}
}
