package guard

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// DefaultJSONLimit is the body size limit ReadJSON and DecodeJSON apply when
// given a limit of zero or less: 1 MiB.
const DefaultJSONLimit = 1 << 20

// InputError is why ReadJSON refused a request body. Detail is written for
// the client and says what to fix; it never contains the body itself beyond
// a field name.
type InputError struct {
	Status int    // http.StatusBadRequest
	Detail string // e.g. `unknown field "nmae"`
	Err    error  // the decoder's or reader's error, if any
}

func (e *InputError) Error() string { return e.Detail }
func (e *InputError) Unwrap() error { return e.Err }

// ReadJSON decodes the body of r into v strictly: the body must hold exactly
// one JSON value of at most limit bytes (DefaultJSONLimit if limit <= 0),
// with no field that v does not have, and nothing after it but white space.
//
// ReadJSON returns nil on success, and otherwise an *InputError with status
// 400 for a body larger than limit (the connection is then closed after the
// response, as http.MaxBytesReader arranges), an empty body, malformed JSON,
// a value of the wrong type, an unknown field, or data after the value.
//
// ReadJSON does not look at Content-Type, since common clients send JSON
// with another one (curl -d sends application/x-www-form-urlencoded); an API
// that must refuse cross-site form posts should check it before.
//
// The only other error is the one encoding/json gives when v is not a
// non-nil pointer, which is a bug in the caller. ReadJSON does not write to
// w; w is needed for the size limit.
func ReadJSON(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	if limit <= 0 {
		limit = DefaultJSONLimit
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return inputError(err, limit)
	}
	if _, err := dec.Token(); err != io.EOF {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return inputError(err, limit)
		}
		return &InputError{Status: http.StatusBadRequest,
			Detail: "request body has data after the JSON value; send exactly one value", Err: err}
	}
	return nil
}

// inputError explains a decoding error to the client.
func inputError(err error, limit int64) error {
	bad := func(format string, args ...any) error {
		return &InputError{Status: http.StatusBadRequest, Detail: fmt.Sprintf(format, args...), Err: err}
	}
	var (
		tooLarge  *http.MaxBytesError
		syntax    *json.SyntaxError
		wrongType *json.UnmarshalTypeError
		invalid   *json.InvalidUnmarshalError
	)
	switch {
	case errors.As(err, &invalid):
		return fmt.Errorf("guard: decoding JSON: %w", err)
	case errors.As(err, &tooLarge):
		return bad("request body is larger than the limit of %d bytes", limit)
	case errors.Is(err, io.EOF):
		return bad("request body is empty; send a JSON value")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return bad("malformed JSON: the body ends in the middle of a value")
	case errors.As(err, &syntax):
		return bad("malformed JSON at byte %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "))
	case errors.As(err, &wrongType):
		if wrongType.Field != "" {
			return bad("field %q: expected %s, got JSON %s", wrongType.Field, wrongType.Type, wrongType.Value)
		}
		return bad("expected %s, got JSON %s", wrongType.Type, wrongType.Value)
	}
	// encoding/json has no type for an unknown field; its message is
	// documented by example as `json: unknown field "name"`.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return bad("unknown field %s", name)
	}
	return bad("reading request body: %v", err)
}

// DecodeJSON is ReadJSON that answers the client itself: on failure it
// writes the InputError's status (400) and detail with WriteError and returns
// false, and the handler should return. On success it writes nothing and
// returns true. A bug in the caller (v not a non-nil pointer) panics, so that
// it is logged with its stack (and answered 500 behind Middleware).
//
//	var in struct{ Name string `json:"name"` }
//	if !guard.DecodeJSON(w, r, &in, 64<<10) {
//		return
//	}
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	err := ReadJSON(w, r, v, limit)
	if err == nil {
		return true
	}
	var in *InputError
	if !errors.As(err, &in) {
		panic(err)
	}
	WriteError(w, r, in.Status, in.Detail)
	return false
}
