// Command conventional is the design the in-Envoy vote filter replaces, for comparison in
// `make bench-edge`: Envoy in front of a plain Go net/http service that admits votes with the
// same admission code (edgeruntime.Build: JWT, election checks, the Redis gate, the SQS
// batcher). It serves POST /api/v1/votes only, from a votefilter config file (the JSON the
// control plane sends the filter).
//
//	conventional -config filter.json -listen 127.0.0.1:9000
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
	"strings"
	"time"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/filters/votefilter/edgeruntime"
)

func main() {
	configFile := flag.String("config", "", "votefilter config (JSON), as the control plane sends the filter")
	listen := flag.String("listen", "127.0.0.1:9000", "where to serve")
	flag.Parse()
	raw, err := os.ReadFile(*configFile)
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := edgeconfig.Parse(raw)
	if err != nil {
		log.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "conventional")
	built, err := edgeruntime.Build(cfg, logger, nil)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: *listen, Handler: admission{built.Admitter, cfg.MaxBodyBytes},
		ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

type admission struct {
	adm     *votefilter.Admitter
	maxBody int
}

func (a admission) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	requestID := r.Header.Get("X-Request-Id")
	if r.URL.Path != contract.PathVotes || r.Method != http.MethodPost {
		write(w, votefilter.ErrorReply(&votefilter.Rejection{Code: contract.CodeNotFound, Message: "not found"}, requestID))
		return
	}
	// One byte over the limit is enough for the admission to refuse the body as too large.
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(a.maxBody)+1))
	if err != nil {
		write(w, votefilter.ErrorReply(&votefilter.Rejection{Code: contract.CodeInvalidRequest, Message: "body could not be read"}, requestID))
		return
	}
	req := votefilter.Request{Authorization: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type"),
		RequestID: requestID, ClientIP: clientIP(r), Body: body}
	b, rej := a.adm.Check(r.Context(), req)
	switch {
	case rej != nil:
		write(w, votefilter.ErrorReply(rej, requestID))
	case b.NeedsSiteverify:
		write(w, votefilter.ErrorReply(&votefilter.Rejection{Code: contract.CodeUnavailable,
			Message: "siteverify is not served by this comparison service", RetryAfter: time.Second}, requestID))
	default:
		// The vote's own deadline, not the client's connection, bounds it, as in the filter.
		write(w, a.adm.Commit(context.WithoutCancel(r.Context()), b))
	}
}

// clientIP is the last X-Forwarded-For entry, the one the Envoy in front appended.
func clientIP(r *http.Request) string {
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
		return strings.TrimSpace(xff[strings.LastIndexByte(xff, ',')+1:])
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	return host
}

func write(w http.ResponseWriter, r votefilter.Response) {
	for _, h := range r.Headers {
		w.Header().Set(h[0], h[1])
	}
	w.WriteHeader(r.Status)
	w.Write(r.Body)
}
