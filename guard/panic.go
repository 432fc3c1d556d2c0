package guard

import (
	"fmt"
	"log/slog"
	"runtime/debug"
)

// PanicError is a recovered panic: the value given to panic and the stack of
// the goroutine that panicked, taken at the moment it was recovered.
//
// If Value is an error, Unwrap returns it, so errors.Is and errors.As see
// through a PanicError to the original error (a runtime.Error, an
// http.ErrAbortHandler, your own error type).
type PanicError struct {
	// Value is the value passed to panic. A panic(nil) arrives as a
	// *runtime.PanicNilError, as recover returns it.
	Value any
	// Stack is the panicking goroutine's stack in the format of
	// runtime/debug.Stack: "goroutine N [running]:" followed by frames,
	// starting at the recovery and running through panic to the code that
	// panicked.
	Stack []byte
}

// Error returns "panic: " followed by the panic value. It does not include
// the stack; log Stack separately.
func (e *PanicError) Error() string {
	if err, ok := e.Value.(error); ok {
		return "panic: " + err.Error()
	}
	return fmt.Sprintf("panic: %v", e.Value)
}

// Unwrap returns the panic value if it is an error, and nil otherwise.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// newPanicError turns a value returned by recover into a *PanicError. A value
// that is already a *PanicError (a recovered panic re-panicked, for example
// with the error Scope.Wait returned) is returned as it is, so it keeps the
// stack of the original panic. It must be called from the deferred function
// that recovered, so that the stack is the panicking goroutine's.
func newPanicError(v any) *PanicError {
	if pe, ok := v.(*PanicError); ok {
		return pe
	}
	return &PanicError{Value: v, Stack: debug.Stack()}
}

// Run calls f and returns what f returns; if f panics, Run recovers and
// returns a *PanicError carrying the panic value and stack instead. Run
// returns normally in every case but one: if f calls runtime.Goexit, the
// calling goroutine exits, as it would without Run.
//
// A panic with http.ErrAbortHandler (httputil.ReverseProxy raises one when a
// response cannot be completed) comes back as an error like any other. In a
// handler, pass it on so that net/http aborts the response silently:
//
//	if errors.Is(err, http.ErrAbortHandler) {
//		panic(http.ErrAbortHandler)
//	}
//
// Middleware does this itself for panics it recovers.
func Run(f func() error) (err error) {
	defer Recover(&err)
	return f()
}

// Recover, deferred directly, recovers a panic in the function that deferred
// it and stores it in *errp as a *PanicError:
//
//	func work() (err error) {
//		defer guard.Recover(&err)
//		...
//	}
//
// If there is no panic, *errp is left as the function set it. Recover only
// works as the deferred call itself (defer guard.Recover(&err)), not when
// called from inside another deferred function, because that is how recover
// works.
func Recover(errp *error) {
	if v := recover(); v != nil {
		*errp = newPanicError(v)
	}
}

// Go runs f in a new goroutine that cannot crash the process: if f panics,
// the panic is recovered and passed to report, on that goroutine, as a
// *PanicError. If report is nil, the panic is logged at level Error with
// slog.Default(), with the stack. A panic in report itself is not recovered.
//
// Go does not wait for f and gives no way to; use a Scope to wait for a group
// of goroutines or to cancel them when one fails.
func Go(f func(), report func(*PanicError)) {
	go func() {
		defer func() {
			if v := recover(); v != nil {
				pe := newPanicError(v)
				if report == nil {
					slog.Default().Error("guard: recovered a panic in a goroutine",
						"error", pe.Error(), "stack", string(pe.Stack))
					return
				}
				report(pe)
			}
		}()
		f()
	}()
}
