module {{go_module}}

go 1.22

require github.com/flow-bridge/flow-bridge/adapters/go v0.0.0

// A copy of flow-bridge's Go adapter, made by `flow-bridge init` (see README.md).
replace github.com/flow-bridge/flow-bridge/adapters/go => ./adapter
