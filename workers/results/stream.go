package results

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/contract"
)

// Per-connection timings.
const (
	// writeTimeout: a client whose socket takes longer than this to accept one message is
	// dropped; its peers are never affected (each client has its own writer).
	writeTimeout = 5 * time.Second
	// pingInterval and pingTimeout detect half-open connections (a phone that lost coverage),
	// which otherwise keep buffering heartbeats for hours.
	pingInterval = 30 * time.Second
	pingTimeout  = 15 * time.Second
	// authTimeout bounds the wait for the JWKS on a cold start.
	authTimeout = 3 * time.Second
)

// handleStream serves GET /api/v1/results/stream/{electionId}: checks happen before the
// upgrade, so a rejected client gets a proper HTTP status and ErrorResponse rather than a
// WebSocket that closes at once.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	id, ok := contract.CanonicalUUID(r.PathValue("electionId"))
	if !ok {
		s.writeError(w, r, contract.CodeInvalidElectionID, "electionId must be a UUID")
		return
	}
	if s.hub == nil || s.auth == nil {
		s.metrics.streamOpens.WithLabelValues("error").Inc()
		s.writeError(w, r, contract.CodeUnavailable, "the results stream is not enabled on this server")
		return
	}
	raw := r.URL.Query().Get("token")
	if raw == "" {
		raw, _ = auth.BearerToken(r.Header.Get("Authorization")) // non-browser clients may prefer the header
	}
	if raw == "" {
		s.metrics.streamOpens.WithLabelValues("unauthorized").Inc()
		s.unauthorized(w, r, "the token query parameter is required")
		return
	}
	actx, cancel := context.WithTimeout(r.Context(), authTimeout)
	p, err := s.auth.Verify(actx, raw)
	cancel()
	if err != nil {
		s.metrics.streamOpens.WithLabelValues("unauthorized").Inc()
		s.authError(w, r, err)
		return
	}
	// Checked after the token, so that a plain GET (how the live page diagnoses a failing
	// stream) learns whether its token is the problem.
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		s.metrics.streamOpens.WithLabelValues("error").Inc()
		w.Header().Set("Upgrade", "websocket")
		s.writeError(w, r, contract.CodeInvalidRequest, "this endpoint is a WebSocket: send an Upgrade: websocket request")
		return
	}
	if s.streamSlots.Add(1) > int64(s.maxStreams) {
		s.streamSlots.Add(-1)
		s.metrics.streamOpens.WithLabelValues("full").Inc()
		s.writeError(w, r, contract.CodeUnavailable, "this server has no stream capacity left, retry shortly")
		return
	}
	defer s.streamSlots.Add(-1)
	release, err := s.limits.acquire(r.Context(), p.Subject)
	if err != nil {
		s.metrics.streamOpens.WithLabelValues("limited").Inc()
		w.Header().Set("Retry-After", "5")
		s.writeError(w, r, contract.CodeRateLimited, fmt.Sprintf("at most %d concurrent result streams per viewer", s.limits.max))
		return
	}
	defer release()

	c := newClient()
	hctx, hcancel := context.WithTimeout(r.Context(), s.dbTimeout)
	bc, err := s.hub.subscribe(hctx, id, c)
	hcancel()
	if err != nil {
		s.metrics.streamOpens.WithLabelValues("not_found").Inc()
		if errors.Is(err, errTooManyElections) {
			s.writeError(w, r, contract.CodeUnavailable, "results stream busy, retry shortly")
			return
		}
		s.storeError(w, r, id, err)
		return
	}

	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		OriginPatterns:  s.origins,
		CompressionMode: websocket.CompressionDisabled, // messages are tiny; deflate state would cost ~10x memory per client
	})
	if err != nil {
		bc.remove(c)
		s.metrics.streamOpens.WithLabelValues("error").Inc()
		return // Accept has answered already
	}
	s.metrics.streamOpens.WithLabelValues("accepted").Inc()
	// The request's context ends with the handler; the stream ends with the client, the
	// server, or a write failure.
	ctx := conn.CloseRead(context.WithoutCancel(r.Context()))
	code, reason := s.pump(ctx, conn, c)
	bc.remove(c)
	_ = conn.Close(code, reason)
}

// pump writes the client's queue to its socket until one side ends.
func (s *Server) pump(ctx context.Context, conn *websocket.Conn, c *client) (websocket.StatusCode, string) {
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return websocket.StatusNormalClosure, ""
		case m, ok := <-c.send:
			if !ok {
				if c.reason == reasonGoingAway {
					return websocket.StatusGoingAway, "server restarting, reconnect"
				}
				return websocket.StatusTryAgainLater, "client too slow, reconnect"
			}
			wctx, cancel := context.WithTimeout(ctx, writeTimeout)
			err := conn.Write(wctx, websocket.MessageText, m.data)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					s.metrics.dropped.WithLabelValues("write").Inc()
				}
				return websocket.StatusTryAgainLater, "write failed"
			}
			s.metrics.broadcastLag.Observe(time.Since(m.since).Seconds())
		case <-ping.C:
			pctx, cancel := context.WithTimeout(ctx, pingTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					s.metrics.dropped.WithLabelValues("ping").Inc()
				}
				return websocket.StatusGoingAway, "ping timeout"
			}
		}
	}
}

// authError answers a failed verification: 503 when the keys are unavailable (the token may
// be fine), 401 otherwise.
func (s *Server) authError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, auth.ErrKeysUnavailable) {
		s.log.Warn("token verification unavailable", "err", err)
		s.writeError(w, r, contract.CodeUnavailable, "token verification is temporarily unavailable, retry shortly")
		return
	}
	s.unauthorized(w, r, "invalid or expired token")
}

// headerHasToken reports whether a comma-separated header contains token (case-insensitive).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="results"`)
	s.writeError(w, r, contract.CodeUnauthorized, msg)
}
