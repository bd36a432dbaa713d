//go:build !cgo

package agent_test

const withCgo = false
