// Command goservice is a small HTTP service built on keel's Go library: run
// it under keel as several instances sharing one socket (see keel.yaml), or
// by hand, where it listens on 127.0.0.1:8080.
//
//	GET  /hello        who answered: app instance and pid
//	POST /greet        {"name": "..."}: strict JSON input (400 on bad input)
//	GET  /profile      two lookups in parallel in the request's scope;
//	                   ?bug=1 makes one of them panic: that request gets 500
//	GET  /panic        the handler panics: that request gets 500
//
// After a panic, with PANIC_POLICY=drain (the default), the instance stops
// accepting, finishes its in-flight requests and exits 1, and keel starts a
// clean one while the others serve; with PANIC_POLICY=keep it carries on.
//
// A background job runs in a guard.Scope tied to the server's life: its
// panic is logged and does not take the process down.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/keel-run/keel/guard"
	"github.com/keel-run/keel/serve"
)

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With(
		"app", os.Getenv("KEEL_APP"), "instance", os.Getenv("KEEL_INSTANCE"))
	if err := run(logger); err != nil {
		logger.Error("goservice stopped", "error", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	policy := serve.DrainAndExit
	switch p := os.Getenv("PANIC_POLICY"); p {
	case "", "drain":
	case "keep":
		policy = serve.KeepServing
	default:
		return fmt.Errorf("PANIC_POLICY=%q: want drain or keep", p)
	}

	// Background work lives as long as the process serves.
	background, stop := context.WithCancel(context.Background())
	defer stop()
	jobs := guard.NewScope(background)
	jobs.Go(func(ctx context.Context) error {
		return refreshLoop(ctx, logger)
	})

	srv := &http.Server{
		Addr:              "127.0.0.1:8080", // used only when not run by keel
		Handler:           routes(logger),
		ReadHeaderTimeout: 5 * time.Second,
	}
	err := serve.Run(srv, serve.Options{OnPanic: policy, Logger: logger})
	stop()
	if jobErr := jobs.Wait(); jobErr != nil && !errors.Is(jobErr, context.Canceled) {
		logger.Error("background job failed", "error", jobErr)
	}
	return err
}

func routes(logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	instance := os.Getenv("KEEL_INSTANCE")
	if instance == "" {
		instance = "-"
	}

	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from instance %s (pid %d)\n", instance, os.Getpid())
	})

	mux.HandleFunc("POST /greet", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Name string `json:"name"`
		}
		if !guard.DecodeJSON(w, r, &in, 4<<10) {
			return // answered 400 with what is wrong
		}
		if in.Name == "" {
			guard.WriteError(w, r, http.StatusBadRequest, `"name" is required`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"greeting\":%q}\n", "hello, "+in.Name)
	})

	mux.HandleFunc("GET /profile", func(w http.ResponseWriter, r *http.Request) {
		s := guard.ScopeOf(w)
		var user, orders string
		s.Go(func(ctx context.Context) error {
			user = "ada"
			return nil
		})
		s.Go(func(ctx context.Context) error {
			if r.URL.Query().Get("bug") == "1" {
				var m map[string]string
				m["orders"] = "3" // a bug in a goroutine: caught by the scope
			}
			orders = "3 orders"
			return nil
		})
		if err := s.Wait(); err != nil {
			return // a panic: the middleware answers 500 and logs it
		}
		fmt.Fprintf(w, "%s has %s\n", user, orders)
	})

	mux.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) {
		logger.Warn("about to panic on purpose", "request_id", guard.RequestIDOf(w))
		panic("deliberate panic from /panic")
	})
	return mux
}

// refreshLoop stands in for a cache refresher. A panic in one refresh is
// recovered and logged; the loop carries on.
func refreshLoop(ctx context.Context, logger *slog.Logger) error {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := guard.Run(refresh); err != nil {
				var pe *guard.PanicError
				if errors.As(err, &pe) {
					logger.Error("refresh panicked", "error", err, "stack", string(pe.Stack))
				} else {
					logger.Warn("refresh failed", "error", err)
				}
			}
		}
	}
}

func refresh() error { return nil }
