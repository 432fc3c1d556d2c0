// Package http1 speaks the part of HTTP/1.1 that keel needs, and no more:
// the control socket's server (internal/control), the CLI's client of it
// (internal/client), and one-request-per-connection GETs and POSTs to
// http:// and https:// URLs for readiness probes, health checks and the
// on_crash webhook.
//
// # Why not net/http
//
// The daemon's resident memory is mostly the keel binary's own pages:
// package init functions and the code a request runs touch nearly every
// 64 KB chunk of text they live in. Linking net/http cost the daemon about
// 0.5 MB of RSS for its package inits alone, plus about 350 KB of server
// code run on every control request, plus its pclntab and rodata — for a
// few small jobs. This package does those jobs in a few hundred lines, and
// internal/archtest keeps net/http out of cmd/keel. Test binaries may still
// use net/http and httptest as the peer at the other end. Measured with
// bench/cmd/core (go1.26, linux/amd64): the static binary went from 14.1 to
// 12.2 MB, the idle daemon from 10.4 to 9.3 MB of RSS, each keeper by about
// 0.8 MB.
//
// crypto/tls, for https:// health checks and on_crash URLs (Client), is
// now the largest part of what is left: it and the crypto it pulls in are
// about 2.8 MB of the binary and 1.3 MB of the idle daemon's RSS (their
// package inits run whether or not https is ever used).
//
// # What it does
//
// Server (see Serve): reads a request line, headers (at most
// MaxHeaderBytes) and a Content-Length body (at most MaxBodyBytes, read
// whole before the handler runs); refuses chunked or other
// Transfer-Encodings with 501; answers Expect: 100-continue; buffers the
// handler's answer and writes it with a Content-Length; keeps connections
// alive by HTTP/1.1's rules (HTTP/1.0 only when asked), honouring
// Connection: close either way; times out slow headers and idle
// connections; cancels a request's context when its client hangs up; and
// shuts down gracefully: stop accepting, let requests in flight finish
// until a deadline, then close.
//
// Client side (see ReadResponse, WriteRequest and Client): writes a
// request with Host and Content-Length; reads a response's status line and
// headers, skipping 1xx interim responses, and its body whether framed by
// Content-Length, chunked, or the end of the connection. Sizes are
// bounded. There is no connection reuse, no proxy, no redirect following,
// no compression and no HTTP/2.
package http1
