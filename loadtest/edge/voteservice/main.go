// Command voteservice is vote admission as a plain Go net/http service behind Envoy: the
// conventional design that the in-Envoy filter replaces, kept for the edge benchmark
// (loadtest/edge) to measure against. It runs the same admission code as the filter
// (votefilter.Admitter: JWT against the JWKS, the vote's checks, the Redis gate, the SQS batcher),
// built from the same packages, so the two differ only in where the code runs:
//
//	voteservice -config edge.json -addr 127.0.0.1:9000
//
// edge.json is the vote filter's own configuration (edgeconfig), as the control plane serves it.
// Only POST /api/v1/votes is served; a production service would also serve the status and
// challenge endpoints, which the benchmark does not exercise.
package main

import (
	"context"
	"flag"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter"

	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/filters/votefilter/edgeruntime"
)

func main() {
	configFile := flag.String("config", "", "the vote filter's configuration (JSON, edgeconfig)")
	addr := flag.String("addr", "127.0.0.1:9000", "listen address")
	flag.Parse()
	raw, err := os.ReadFile(*configFile)
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := edgeconfig.Parse(raw)
	if err != nil {
		log.Fatal(err)
	}
	adm, err := newAdmitter(cfg)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: *addr, Handler: handler(adm, cfg.MaxBodyBytes), ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

// newAdmitter wires the admission logic exactly as the filter does (edgeruntime.Build);
// captcha modes other than "off" are not supported here.
func newAdmitter(cfg *edgeconfig.Config) (*votefilter.Admitter, error) {
	// The filter logs one line per accepted vote to Envoy's stderr; so does this service.
	built, err := edgeruntime.Build(cfg, slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "voteservice"), nil)
	if err != nil {
		return nil, err
	}
	return built.Admitter, nil
}

func handler(adm *votefilter.Admitter, maxBody int) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(contract.PathVotes, func(w http.ResponseWriter, r *http.Request) {
		requestID := r.Header.Get("x-request-id")
		if r.Method != http.MethodPost {
			reply(w, votefilter.ErrorReply(&votefilter.Rejection{Code: contract.CodeMethodNotAllowed,
				Message: "only POST is allowed here"}, requestID))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, int64(maxBody)+1))
		if err != nil {
			return // the client went away
		}
		if len(body) > maxBody {
			reply(w, votefilter.ErrorReply(&votefilter.Rejection{Code: contract.CodePayloadTooLarge,
				Message: "vote body too large"}, requestID))
			return
		}
		b, rej := adm.Check(r.Context(), votefilter.Request{
			Authorization: r.Header.Get("Authorization"),
			ContentType:   r.Header.Get("Content-Type"),
			RequestID:     requestID,
			ClientIP:      clientIP(r),
			Body:          body,
		})
		if rej != nil {
			reply(w, votefilter.ErrorReply(rej, requestID))
			return
		}
		// Not the request's context: a viewer who hangs up must not cut a vote off between
		// the queue's acknowledgement and the store's confirmation.
		reply(w, adm.Commit(context.Background(), b))
	})
	return mux
}

func reply(w http.ResponseWriter, r votefilter.Response) {
	for _, h := range r.Headers {
		w.Header().Add(h[0], h[1])
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(r.Body)))
	w.WriteHeader(r.Status)
	w.Write(r.Body)
}

// clientIP is the address Envoy appended to X-Forwarded-For (its listener uses the remote
// address), else the peer: the service trusts only the one hop in front of it.
func clientIP(r *http.Request) string {
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
		return strings.TrimSpace(xff[strings.LastIndexByte(xff, ',')+1:])
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
