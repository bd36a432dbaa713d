package oidcauth

import "net/http"

// Code is an RFC 6750 error code (or, for an unreachable issuer, the OAuth
// temporarily_unavailable).
type Code string

// The codes.
const (
	CodeInvalidToken      Code = "invalid_token"           // 401
	CodeInsufficientScope Code = "insufficient_scope"      // 403
	CodeUnavailable       Code = "temporarily_unavailable" // 503
)

// Error is a refused token. Message is safe to send to the client
// (error_description); Err is the cause, for the log only.
type Error struct {
	Code    Code
	Message string
	// Missing is set when there was no token at all: RFC 6750 §3.1 then
	// wants a challenge without an error code.
	Missing bool
	// Scope is the scope the resource needs (for insufficient_scope).
	Scope string
	Err   error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return string(e.Code) + ": " + e.Message + ": " + e.Err.Error()
	}
	return string(e.Code) + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Status is the HTTP status to answer with: 401, 403 or 503.
func (e *Error) Status() int {
	switch e.Code {
	case CodeInsufficientScope:
		return http.StatusForbidden
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusUnauthorized
	}
}
