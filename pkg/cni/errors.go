package cni

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
)

// Plugin-specific error codes (the spec reserves 100+ for plugins).
const (
	// ErrNotReady is STATUS's "plugin not available" (spec code 50).
	ErrNotReady uint = 50
	// ErrIPAMNotReady is STATUS's "limited connectivity" (spec code 51).
	ErrIPAMNotReady uint = 51
	// ErrRangeExhausted: an IPAM range has no free address.
	ErrRangeExhausted uint = 101
	// ErrLinkExists: the requested interface name is taken in the namespace.
	ErrLinkExists uint = 102
	// ErrAddressInUse: a requested address is held by another attachment,
	// or the attachment already holds an address in that range.
	ErrAddressInUse uint = 103
)

// Error is a CNI error with a well-known code that still wraps its cause, so
// errors.Is/As work through it inside knit while the runtime sees only code,
// msg and details.
type Error struct {
	Code    uint
	Msg     string
	Details string
	Err     error
}

func (e *Error) Error() string {
	if e.Details != "" {
		return e.Msg + "; " + e.Details
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the code and a formatted message; a %w verb
// is kept as the wrapped cause.
func Errorf(code uint, format string, a ...any) *Error {
	err := fmt.Errorf(format, a...)
	return &Error{Code: code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// ConfigError reports an invalid config value (code 7), naming the field.
func ConfigError(field, format string, a ...any) *Error {
	e := Errorf(types.ErrInvalidNetworkConfig, format, a...)
	e.Msg = field + ": " + e.Msg
	return e
}

// AsTypesError converts any error into the spec's wire error. Errors that
// carry no code are internal (999), as skel reports them.
func AsTypesError(err error) *types.Error {
	var ke *Error
	if errors.As(err, &ke) {
		return &types.Error{Code: ke.Code, Msg: ke.Msg, Details: ke.Details}
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return &types.Error{Code: types.ErrInternal, Msg: err.Error()}
}
