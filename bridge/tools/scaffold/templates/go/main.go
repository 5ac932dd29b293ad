// Command handler is the {{name}} plugin's handler, written with flow-bridge's Go adapter.
//
// flow-bridge starts this program once and sends it every task; execute answers each,
// in its own goroutine. Return the task's result data, or an error (a failed task whose
// message the flow shows). fmt.Println is safe: the adapter sends stdout to the log.
package main

import (
	"context"
	"errors"
	"fmt"

	flowbridge "github.com/flow-bridge/flow-bridge/adapters/go"
)

func execute(ctx context.Context, r *flowbridge.Request) (any, error) {
	cfg := r.ConfigMap() // the flow node's configuration, parsed as JSON
	if cfg == nil {
		return nil, errors.New("the node's config must be a JSON object")
	}
	name, ok := cfg["name"]
	if !ok {
		name = "world"
	}
	r.Log.Info(fmt.Sprintf("greeting %v", name)) // a log line tied to this task
	return map[string]any{"greeting": fmt.Sprintf("hello, %v", name)}, nil
}

func main() {
	flowbridge.Run(flowbridge.Plugin{
		Name:    "{{name}}",
		Execute: execute,
		Debug:   execute, // the same function answers the flow editor's debug runs
	})
}
