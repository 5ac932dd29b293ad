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
		Execute: func(ctx context.Context, t *flowbridge.Task) (any, error) {
			var cfg struct{ X float64 }
			if err := t.DecodeConfig(&cfg); err != nil {
				return nil, &flowbridge.HandlerError{Message: "config must be JSON like {\"x\": 2}", Detail: err.Error()}
			}
			t.Log.Info("doubling", "x", cfg.X) // a log frame tied to this request
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
func ExampleResult() {
	_ = func(ctx context.Context, t *flowbridge.Task) (any, error) {
		if t.ConfigMap() == nil {
			return nil, errors.New("config must be a JSON object")
		}
		return flowbridge.Result{
			Data:    flowbridge.Map{{Key: "b", Value: 1}, {Key: "a", Value: 2}},
			Message: "read 2 registers",
		}, nil
	}
}
