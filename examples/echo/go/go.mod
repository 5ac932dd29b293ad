module github.com/flow-bridge/flow-bridge/examples/echo/go

go 1.22

require github.com/flow-bridge/flow-bridge/adapters/go v0.0.0

replace github.com/flow-bridge/flow-bridge/adapters/go => ../../../adapters/go
