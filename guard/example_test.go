package guard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/keel-run/keel/guard"
)

func ExampleRun() {
	err := guard.Run(func() error {
		var m map[string]int
		m["answer"] = 42 // a bug: assignment to a nil map
		return nil
	})
	fmt.Println(err)

	var pe *guard.PanicError
	if errors.As(err, &pe) {
		fmt.Println("stack captured:", strings.HasPrefix(string(pe.Stack), "goroutine "))
	}
	// Output:
	// panic: assignment to entry in nil map
	// stack captured: true
}

func ExampleRecover() {
	parse := func(s string) (n int, err error) {
		defer guard.Recover(&err)
		return int(s[0] - '0'), nil // panics on ""
	}
	_, err := parse("")
	fmt.Println(err)
	// Output: panic: runtime error: index out of range [0] with length 0
}

func ExampleGo() {
	done := make(chan struct{})
	guard.Go(func() {
		panic("worker crashed")
	}, func(pe *guard.PanicError) {
		fmt.Println("recovered:", pe.Value)
		close(done)
	})
	<-done
	fmt.Println("the process lives on")
	// Output:
	// recovered: worker crashed
	// the process lives on
}

func ExampleScope() {
	s := guard.NewScope(context.Background())
	s.Go(func(ctx context.Context) error {
		panic("cache shard 3 is corrupt")
	})
	s.Go(func(ctx context.Context) error {
		<-ctx.Done() // canceled by the other goroutine's failure
		return ctx.Err()
	})
	err := s.Wait()
	fmt.Println(err)
	fmt.Println(context.Cause(s.Context()) == err)
	// Output:
	// panic: cache shard 3 is corrupt
	// true
}

func ExampleMiddleware() {
	logger := slog.New(slog.DiscardHandler) // use your service's logger
	h := guard.Middleware(logger)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("a bug in one handler")
	}))

	r := httptest.NewRequest("GET", "/orders/7", nil)
	r.Header.Set("X-Request-Id", "req-42")
	r.Header.Set("Accept", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	fmt.Println(w.Code, w.Header().Get("Content-Type"))
	fmt.Print(w.Body.String())
	// Output:
	// 500 application/problem+json
	// {"type":"about:blank","title":"Internal Server Error","status":500,"detail":"the server failed while handling this request","request_id":"req-42"}
}

// A handler fetches two things at once through the request's scope: a panic
// in either answers the request 500, and the process carries on.
func ExampleScopeOf() {
	h := guard.Middleware(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := guard.ScopeOf(w) // the request's state lives in w; r is the server's
		var user, orders string
		s.Go(func(ctx context.Context) error { user = "ada"; return nil })
		s.Go(func(ctx context.Context) error {
			if r.URL.Query().Has("bug") {
				panic("orders service returned nil")
			}
			orders = "3 orders"
			return nil
		})
		if err := s.Wait(); err != nil {
			return // a panic: the middleware answers 500; an error: answer it here
		}
		fmt.Fprintf(w, "%s has %s\n", user, orders)
	}))

	for _, url := range []string{"/profile", "/profile?bug"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", url, nil))
		body, _ := io.ReadAll(w.Body)
		fmt.Printf("%d %s", w.Code, strings.SplitAfter(string(body), ":")[0])
		fmt.Println()
	}
	// Output:
	// 200 ada has 3 orders
	//
	// 500 500 Internal Server Error:
}

// lookUpOrders is code that is given only a context. Given the context of a
// request from guard.Request, it finds the request's id and scope there.
func lookUpOrders(ctx context.Context, user string) (string, error) {
	fmt.Println("looking up orders for request", guard.RequestID(ctx))
	s := guard.ScopeFrom(ctx) // the same scope as guard.ScopeOf(w)
	var n int
	s.Go(func(ctx context.Context) error {
		if user == "" {
			panic("no user") // answers the request 500
		}
		n = 3
		return nil
	})
	if err := s.Wait(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s has %d orders", user, n), nil
}

// A handler passes its request on to code that has only a context: Request
// puts the request's state into the request's context (copying the request
// once, as r.WithContext does).
func ExampleRequest() {
	h := guard.Middleware(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = guard.Request(w, r)
		orders, err := lookUpOrders(r.Context(), r.URL.Query().Get("user"))
		if err != nil {
			return // a panic: the middleware answers 500
		}
		fmt.Fprintln(w, orders)
	}))

	for i, url := range []string{"/orders?user=ada", "/orders"} {
		r := httptest.NewRequest("GET", url, nil)
		r.Header.Set("X-Request-Id", fmt.Sprint("req-", i+1))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Print(w.Code, " ", w.Body.String())
	}
	// Output:
	// looking up orders for request req-1
	// 200 ada has 3 orders
	// looking up orders for request req-2
	// 500 500 Internal Server Error: the server failed while handling this request
	// request id: req-2
}

// The request id, as Middleware logs it, for the handler's own records.
func ExampleRequestIDOf() {
	h := guard.Middleware(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("request id:", guard.RequestIDOf(w))
	}))
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Request-Id", "req-42") // without one, Middleware makes one up
	h.ServeHTTP(httptest.NewRecorder(), r)
	// Output: request id: req-42
}

func ExampleDecodeJSON() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Name string `json:"name"`
		}
		if !guard.DecodeJSON(w, r, &in, 64<<10) {
			return // answered 400
		}
		fmt.Fprintf(w, "hello, %s\n", in.Name)
	})

	for _, body := range []string{`{"name":"ada"}`, `{"nmae":"ada"}`, `{"name":"ada"`} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("POST", "/", strings.NewReader(body)))
		fmt.Print(w.Code, " ", w.Body.String())
	}
	// Output:
	// 200 hello, ada
	// 400 400 Bad Request: unknown field "nmae"
	// 400 400 Bad Request: malformed JSON: the body ends in the middle of a value
}
