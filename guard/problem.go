package guard

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// WriteError answers r with status and a one-line detail for the client:
// as application/problem+json (RFC 9457: type, title, status, detail, and
// request_id behind Middleware, found through w as by RequestIDOf or else in
// r's context as by RequestID) when the Accept header prefers JSON, and as
// text/plain otherwise. It drops headers that describe a body the handler
// may have prepared (Content-Length, Content-Encoding, ETag, …) and must be
// called before anything else was written.
func WriteError(w http.ResponseWriter, r *http.Request, status int, detail string) {
	id := RequestIDOf(w)
	if id == "" {
		id = RequestID(r.Context())
	}
	writeProblem(w, r, status, detail, id)
}

// problem is an RFC 9457 problem details object.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

func writeProblem(w http.ResponseWriter, r *http.Request, status int, detail, requestID string) {
	h := w.Header()
	for _, k := range []string{"Content-Length", "Content-Encoding", "Content-Range",
		"Content-Disposition", "ETag", "Last-Modified", "Trailer"} {
		h.Del(k)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if requestID != "" {
		h.Set("X-Request-Id", requestID)
	}
	var body []byte
	if prefersJSON(r.Header.Values("Accept")) {
		body, _ = json.Marshal(problem{
			Type:      "about:blank",
			Title:     http.StatusText(status),
			Status:    status,
			Detail:    detail,
			RequestID: requestID,
		})
		body = append(body, '\n')
		h.Set("Content-Type", "application/problem+json")
	} else {
		var b strings.Builder
		b.WriteString(strconv.Itoa(status))
		b.WriteByte(' ')
		b.WriteString(http.StatusText(status))
		if detail != "" {
			b.WriteString(": ")
			b.WriteString(detail)
		}
		b.WriteByte('\n')
		if requestID != "" {
			b.WriteString("request id: ")
			b.WriteString(requestID)
			b.WriteByte('\n')
		}
		body = []byte(b.String())
		h.Set("Content-Type", "text/plain; charset=utf-8")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// prefersJSON reports whether an Accept header rates a JSON error body above
// a plain text one. A JSON type is application/json, application/*+json or
// application/problem+json; ranges (application/*, text/*, */*) match with
// less specificity. Higher q wins; at equal q the more specific match wins;
// a full tie, an absent header or an unparsable one gives text.
func prefersJSON(accept []string) bool {
	jsonQ, jsonSpec := -1.0, 0
	textQ, textSpec := -1.0, 0
	better := func(q float64, spec int, bestQ *float64, bestSpec *int) {
		// The most specific matching range decides a type's q (RFC 9110
		// 12.5.1), so a more specific range replaces a less specific one.
		if spec > *bestSpec || (spec == *bestSpec && q > *bestQ) {
			*bestQ, *bestSpec = q, spec
		}
	}
	for _, line := range accept {
		for part := range strings.SplitSeq(line, ",") {
			mt, params, _ := strings.Cut(part, ";")
			mt = strings.ToLower(strings.TrimSpace(mt))
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
					if err != nil || f < 0 || f > 1 {
						f = 0
					}
					q = f
				}
			}
			switch {
			case mt == "*/*":
				better(q, 1, &jsonQ, &jsonSpec)
				better(q, 1, &textQ, &textSpec)
			case mt == "application/*":
				better(q, 2, &jsonQ, &jsonSpec)
			case mt == "text/*":
				better(q, 2, &textQ, &textSpec)
			case mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
				better(q, 3, &jsonQ, &jsonSpec)
			case mt == "text/plain":
				better(q, 3, &textQ, &textSpec)
			}
		}
	}
	if jsonQ <= 0 {
		return false
	}
	if jsonQ != textQ {
		return jsonQ > textQ
	}
	return jsonSpec > textSpec
}
