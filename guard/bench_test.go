package guard

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// discardWriter is a ResponseWriter that costs next to nothing, so the
// benchmarks measure the handler chain.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

var okBody = []byte("ok\n")

func okHandler(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	w.Write(okBody)
}

type benchKey struct{}

// withValue is the least a context-setting middleware does.
type withValue struct{ next http.Handler }

func (h *withValue) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), benchKey{}, h)))
}

// withContext is the floor for any middleware that changes the request's
// context: one copy of the http.Request, with a context made in advance.
type withContext struct {
	next http.Handler
	ctx  context.Context
}

func (h *withContext) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.next.ServeHTTP(w, r.WithContext(h.ctx))
}

// BenchmarkMiddleware compares a bare handler with the same handler behind
// Middleware; the difference is the middleware's cost per request.
//
// For scale: "withcontext" is the floor for any middleware that changes the
// request's context: r.WithContext copies the 304-byte http.Request into a
// new allocation, and that allocation (with the garbage collection it
// causes) costs most of 100 ns. "withvalue" is what a typical
// context-setting middleware pays: r.WithContext(context.WithValue(...)),
// two allocations. Middleware avoids the copy: it hands the handler the
// server's request and keeps the request's state in the ResponseWriter
// wrapper, one small allocation; the rest of its cost is the deferred
// recover and the uncontended mutex in the writer. "guarded+request" is a
// handler behind Middleware that calls Request to put the state into its
// request's context, paying for the copy itself.
func BenchmarkMiddleware(b *testing.B) {
	next := http.HandlerFunc(okHandler)
	withRequest := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		okHandler(w, Request(w, r))
	})
	guarded := Middleware(slog.New(slog.DiscardHandler))
	handlers := map[string]http.Handler{
		"bare":            next,
		"withcontext":     &withContext{next: next, ctx: context.Background()},
		"withvalue":       &withValue{next: next},
		"guarded":         guarded(next),
		"guarded+request": guarded(withRequest),
	}
	for _, name := range []string{"bare", "withcontext", "withvalue", "guarded", "guarded+request"} {
		h := handlers[name]
		b.Run(name, func(b *testing.B) {
			r := httptest.NewRequest("GET", "/", nil)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
		})
	}
}

// BenchmarkGo compares starting a goroutine with guard.Go and with a bare go
// statement (each goroutine runs to completion).
func BenchmarkGo(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		var wg sync.WaitGroup
		b.ReportAllocs()
		for b.Loop() {
			wg.Add(1)
			go func() { wg.Done() }()
		}
		wg.Wait()
	})
	b.Run("guard", func(b *testing.B) {
		var wg sync.WaitGroup
		done := func() { wg.Done() }
		b.ReportAllocs()
		for b.Loop() {
			wg.Add(1)
			Go(done, nil)
		}
		wg.Wait()
	})
}
