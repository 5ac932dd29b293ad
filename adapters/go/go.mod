module github.com/flow-bridge/flow-bridge/adapters/go

go 1.22
