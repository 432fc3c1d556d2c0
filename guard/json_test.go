package guard

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type signup struct {
	Name string `json:"name"`
	Age  int    `json:"age"`
	Tags struct {
		Color string `json:"color"`
	} `json:"tags"`
}

func TestDecodeJSONRefusesBadInputWith400(t *testing.T) {
	const limit = 64
	cases := []struct {
		name, body string
		status     int
		detail     string
	}{
		{"oversize", `{"name":"` + strings.Repeat("a", 100) + `"}`, 400,
			"request body is larger than the limit of 64 bytes"},
		{"oversize whitespace after value", `{"name":"a"}` + strings.Repeat(" ", 100), 400,
			"request body is larger than the limit of 64 bytes"},
		{"empty", ``, 400, "request body is empty; send a JSON value"},
		{"truncated", `{"name":`, 400, "malformed JSON: the body ends in the middle of a value"},
		{"malformed", `{"name" "x"}`, 400,
			"malformed JSON at byte 9: invalid character '\"' after object key"},
		{"unknown field", `{"nmae":"x"}`, 400, `unknown field "nmae"`},
		{"unknown nested field", `{"tags":{"colour":"red"}}`, 400, `unknown field "colour"`},
		{"wrong type", `{"age":"ten"}`, 400, `field "age": expected int, got JSON string`},
		{"trailing value", `{"name":"a"} {"name":"b"}`, 400,
			"request body has data after the JSON value; send exactly one value"},
		{"trailing garbage", `{"name":"a"}x`, 400,
			"request body has data after the JSON value; send exactly one value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/signup", strings.NewReader(tc.body))
			w := httptest.NewRecorder()
			var in signup
			if DecodeJSON(w, r, &in, limit) {
				t.Fatalf("accepted %q as %+v", tc.body, in)
			}
			if w.Code != tc.status {
				t.Errorf("status = %d, want %d", w.Code, tc.status)
			}
			want := "400 Bad Request: " + tc.detail + "\n"
			if got := w.Body.String(); got != want {
				t.Errorf("body = %q, want %q", got, want)
			}

			// ReadJSON says the same as an *InputError.
			r = httptest.NewRequest("POST", "/signup", strings.NewReader(tc.body))
			err := ReadJSON(httptest.NewRecorder(), r, &in, limit)
			var ie *InputError
			if !errors.As(err, &ie) || ie.Status != tc.status || ie.Detail != tc.detail || err.Error() != tc.detail {
				t.Errorf("ReadJSON = %#v", err)
			}
		})
	}
}

func TestDecodeJSONAccepts(t *testing.T) {
	for _, ct := range []string{"", "application/json", "application/x-www-form-urlencoded"} {
		body := `  {"name":"ada","age":36,"tags":{"color":"blue"}}` + "\n"
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		if ct != "" {
			r.Header.Set("Content-Type", ct)
		}
		w := httptest.NewRecorder()
		var in signup
		if !DecodeJSON(w, r, &in, int64(len(body))) {
			t.Fatalf("Content-Type %q: refused a body of exactly the limit: %s", ct, w.Body)
		}
		if in.Name != "ada" || in.Age != 36 || in.Tags.Color != "blue" {
			t.Errorf("decoded %+v", in)
		}
		if w.Body.Len() != 0 || w.Code != 200 || len(w.Header()) != 0 {
			t.Errorf("DecodeJSON wrote on success: %d %q %v", w.Code, w.Body, w.Header())
		}
	}
}

func TestDecodeJSONDefaultLimit(t *testing.T) {
	body := `"` + strings.Repeat("a", DefaultJSONLimit) + `"`
	r := httptest.NewRequest("POST", "/", strings.NewReader(body))
	var s string
	err := ReadJSON(httptest.NewRecorder(), r, &s, 0)
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(ie.Detail, "limit of 1048576 bytes") {
		t.Errorf("ReadJSON with limit 0 on a 1 MiB+2 body = %v", err)
	}
	var tooLarge *http.MaxBytesError
	if !errors.As(err, &tooLarge) {
		t.Errorf("the InputError does not unwrap to the *http.MaxBytesError: %v", err)
	}
}

func TestDecodeJSONProblemJSON(t *testing.T) {
	r := httptest.NewRequest("POST", "/", strings.NewReader(`{"bogus":1}`))
	r.Header.Set("Accept", "application/problem+json")
	w := httptest.NewRecorder()
	var in signup
	DecodeJSON(w, r, &in, 0)
	var p problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if w.Header().Get("Content-Type") != "application/problem+json" ||
		p != (problem{Type: "about:blank", Title: "Bad Request", Status: 400, Detail: `unknown field "bogus"`}) {
		t.Errorf("%s %+v", w.Header().Get("Content-Type"), p)
	}
}

// Over a real server behind Middleware: bad input is a 400, never a panic or
// a 500, and nothing is logged.
func TestBadInputNeverBecomesA500(t *testing.T) {
	srv, logs := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in signup
		if !DecodeJSON(w, r, &in, 32) {
			return
		}
		io.WriteString(w, "hello "+in.Name)
	}))
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	for body, want := range map[string]int{
		`{"name":"ada"}`:                      200,
		`{"name":"` + strings.Repeat("a", 64): 400,
		`{"name":`:                            400,
		`[1,2,3]`:                             400,
		`{"name":"a","admin":true}`:           400,
		`null`:                                200,
	} {
		resp, err := c.Post(srv.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%q: %d %q, want %d", body, resp.StatusCode, b, want)
		}
	}
	srv.Close()
	logs.none(t)
}

func TestDecodeJSONPanicsOnCallerBug(t *testing.T) {
	err := Run(func() error {
		r := httptest.NewRequest("POST", "/", strings.NewReader(`{}`))
		var in signup
		DecodeJSON(httptest.NewRecorder(), r, in, 0) // not a pointer
		return nil
	})
	var invalid *json.InvalidUnmarshalError
	if !errors.As(err, &invalid) {
		t.Errorf("got %v, want a panic with the *json.InvalidUnmarshalError", err)
	}
}
