package serve_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"

	"github.com/keel-run/keel/serve"
)

// A main function for a service run by keel: socket from keel (or :8080
// when run by hand), READY=1 when serving, graceful drain on SIGTERM, and a
// clean restart after a panic.
func ExampleRun() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	})
	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: mux}
	err := serve.Run(srv, serve.Options{OnPanic: serve.DrainAndExit})
	if err != nil {
		slog.Error("server stopped", "error", err)
		os.Exit(1)
	}
}

// Serve stops cleanly, returning nil, when its context ends.
func ExampleServe() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // stand-in for "the job is over"
	srv := &http.Server{Handler: http.NotFoundHandler()}
	err := serve.Serve(ctx, srv, serve.Options{
		Addr:   "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler),
	})
	fmt.Println("stopped:", err)
	// Output: stopped: <nil>
}

// Listeners gives the inherited sockets to a server other than net/http.
func ExampleListeners() {
	lns, err := serve.Listeners()
	if err != nil {
		slog.Error("bad socket activation environment", "error", err)
		os.Exit(1)
	}
	for _, ln := range lns {
		fmt.Println("inherited", ln.Name, ln.Addr())
		// grpcServer.Serve(ln) ...
	}
}

// Notify reports progress while a service starts; keel shows STATUS.
func ExampleNotify() {
	if err := serve.Notify("STATUS=warming caches"); err != nil {
		slog.Warn("could not notify keel", "error", err)
	}
}
