package pool

import (
	"errors"
	"fmt"
)

// Sentinel errors; callers test them with errors.Is and map them to HTTP
// statuses or tool errors.
var (
	ErrPoolNotFound = errors.New("pool not found")
	ErrPoolExists   = errors.New("pool already exists")
	ErrPoolFull     = errors.New("pool is at its session limit")
	// ErrPoolUnusable means the pool's settings cannot run on this host
	// (for example, a session needs more memory than the host admits).
	ErrPoolUnusable    = errors.New("pool cannot run on this host")
	ErrBadIdentifier   = errors.New("invalid session identifier")
	ErrSessionNotFound = errors.New("session not found")
	// ErrSessionLost means the session's sandbox stopped (for example, the
	// kernel killed it for memory): its state is gone.
	ErrSessionLost  = errors.New("session's sandbox stopped")
	ErrClosed       = errors.New("pool is shutting down")
	ErrUnauthorized = errors.New("invalid or missing API key")
)

// ConfigError is an invalid pool setting.
type ConfigError struct {
	Field   string
	Message string
}

func (e *ConfigError) Error() string { return e.Message }

func invalid(field, format string, args ...any) error {
	return &ConfigError{Field: field, Message: fmt.Sprintf(format, args...)}
}
