// Package admin is the control plane's admin HTTP API: the elections and candidates of the
// contract's admin paths (../shared/contracts/vote-service.yaml), the live edge settings SREs
// tune during a show, and the audit trail. Envoy routes /api/v1/admin/ here; every request
// needs an RS256 token with the admin permission, checked here as well as at the edge.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/xds/audit"
	"github.com/tvvote/voting/xds/edgesettings"
	"github.com/tvvote/voting/xds/elections"
)

// maxBody bounds request bodies; the largest legal one (an election) is ~3 KB.
const maxBody = 64 << 10

// Verifier checks a bearer token; *auth.Verifier is the real one.
type Verifier interface {
	Verify(ctx context.Context, raw string) (auth.Principal, error)
}

// EdgeChecker knows the defaults of the edge settings and whether an override can be shipped;
// *snapshot.Builder is the real one.
type EdgeChecker interface {
	Defaults() edgesettings.Effective
	CheckEdgeSettings(current edgesettings.Set, scope string, o edgesettings.Override) error
}

// API serves the admin endpoints.
type API struct {
	Elections *elections.Store
	Edge      *edgesettings.Store
	Checker   EdgeChecker
	Auth      Verifier
	// Audit reads the audit trail (the same database).
	Audit audit.Querier
	Log   *slog.Logger

	requests *prometheus.CounterVec
}

// New wires the API and registers its request counter with reg.
func New(els *elections.Store, edge *edgesettings.Store, trail audit.Querier, checker EdgeChecker, auth Verifier,
	log *slog.Logger, reg prometheus.Registerer) *API {
	a := &API{Elections: els, Edge: edge, Audit: trail, Checker: checker, Auth: auth, Log: log,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xds_admin_requests_total",
			Help: "Admin API requests, by route and response status.",
		}, []string{"route", "status"})}
	reg.MustRegister(a.requests)
	return a
}

// request is one authenticated admin call.
type request struct {
	*http.Request
	who     audit.Actor
	traceID string
}

type handler func(w http.ResponseWriter, r *request) error

// route maps the methods of one path pattern to handlers; others get 405.
type route map[string]handler

// Handler returns the HTTP handler of every admin path.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	routes := map[string]route{
		"/api/v1/admin/elections": {
			http.MethodGet:  a.listElections,
			http.MethodPost: a.createElection,
		},
		"/api/v1/admin/elections/{electionId}": {
			http.MethodPut:    a.updateElection,
			http.MethodDelete: a.deleteElection,
		},
		"/api/v1/admin/elections/{electionId}/status": {
			http.MethodPatch: a.updateElectionStatus,
		},
		"/api/v1/admin/elections/{electionId}/candidates": {
			http.MethodPost: a.addCandidate,
		},
		"/api/v1/admin/elections/{electionId}/candidates/{candidateId}": {
			http.MethodPut:    a.updateCandidate,
			http.MethodDelete: a.deleteCandidate,
		},
		"/api/v1/admin/edge-settings": {
			http.MethodGet: a.getEdgeSettings,
			http.MethodPut: a.putEdgeSettings,
		},
		"/api/v1/admin/edge-settings/{region}": {
			http.MethodGet:    a.getEdgeSettings,
			http.MethodPut:    a.putEdgeSettings,
			http.MethodDelete: a.deleteEdgeSettings,
		},
		"/api/v1/admin/audit": {
			http.MethodGet: a.listAudit,
		},
	}
	for pattern, rt := range routes {
		mux.Handle(pattern, a.serve(pattern, rt))
	}
	mux.Handle(contract.PathAdmin, a.serve("unknown", route{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, traceID(r), contract.CodeNotFound, "no such endpoint")
	})
	return mux
}

// serve authenticates, dispatches by method and renders errors; every answer that is not a
// success is the contract's ErrorResponse.
func (a *API) serve(pattern string, rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() { a.requests.WithLabelValues(pattern, strconv.Itoa(rec.status)).Inc() }()
		trace := traceID(r)
		// Authentication comes first, so an anonymous caller learns nothing, not even which
		// paths exist.
		who, err := a.authenticate(r)
		if err != nil {
			a.fail(rec, r, trace, err)
			return
		}
		h, ok := rt[r.Method]
		if !ok {
			if len(rt) == 0 {
				writeError(rec, trace, contract.CodeNotFound, "no such admin endpoint")
				return
			}
			allowed := make([]string, 0, len(rt))
			for m := range rt {
				allowed = append(allowed, m)
			}
			slices.Sort(allowed)
			rec.Header().Set("Allow", strings.Join(allowed, ", "))
			writeError(rec, trace, contract.CodeMethodNotAllowed, fmt.Sprintf("%s is not allowed here", r.Method))
			return
		}
		req := &request{Request: r, who: audit.Actor{Subject: who.Subject, TraceID: trace}, traceID: trace}
		if err := h(rec, req); err != nil {
			a.fail(rec, r, trace, err)
		}
	})
}

// authError is a refusal before any handler runs.
type authError struct {
	code, message string
}

func (e *authError) Error() string { return e.message }

func (a *API) authenticate(r *http.Request) (auth.Principal, error) {
	raw, ok := auth.BearerToken(r.Header.Get("Authorization"))
	if !ok {
		return auth.Principal{}, &authError{contract.CodeUnauthorized, "a bearer token is required"}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	p, err := a.Auth.Verify(ctx, raw)
	switch {
	case errors.Is(err, auth.ErrKeysUnavailable):
		return auth.Principal{}, &authError{contract.CodeUnavailable, "token keys are not available, try again"}
	case err != nil:
		return auth.Principal{}, &authError{contract.CodeUnauthorized, "invalid token"}
	}
	if p.Has(contract.PermAdmin) {
		return p, nil
	}
	return auth.Principal{}, &authError{contract.CodeForbidden, "the token lacks the " + contract.PermAdmin + " permission"}
}

// fail renders err: refusals with their code, anything else as a logged 500.
func (a *API) fail(w http.ResponseWriter, r *http.Request, trace string, err error) {
	var ae *authError
	var ee *elections.Error
	switch {
	case errors.As(err, &ae):
		if ae.code == contract.CodeUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="admin"`)
		}
		if ae.code == contract.CodeUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		writeError(w, trace, ae.code, ae.message)
	case errors.As(err, &ee):
		writeError(w, trace, ee.Code, ee.Message)
	default:
		a.Log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "requestId", trace, "err", err)
		writeError(w, trace, contract.CodeInternal, "internal error")
	}
}

func writeError(w http.ResponseWriter, trace, code, message string) {
	writeJSON(w, contract.Status(code), contract.ErrorResponse{Code: code, Message: message, TraceID: trace})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// traceID is the request's x-request-id (Envoy sets one on every request), or a new uuid for a
// request that reached us without one.
func traceID(r *http.Request) string { return contract.TraceID(r.Header.Get("x-request-id")) }

// decode reads a JSON body strictly: unknown fields and trailing data are refused, so a typo
// in a field name is an error rather than a silent no-op.
func decode(r *request, v any) error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return &elections.Error{Code: contract.CodeUnsupportedMedia, Message: "Content-Type must be application/json"}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return &elections.Error{Code: contract.CodeInvalidRequest, Message: "could not read the body"}
	}
	if len(body) > maxBody {
		return &elections.Error{Code: contract.CodePayloadTooLarge, Message: fmt.Sprintf("body exceeds %d bytes", maxBody)}
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &elections.Error{Code: contract.CodeInvalidRequest, Message: "invalid JSON body: " + err.Error()}
	}
	if dec.More() {
		return &elections.Error{Code: contract.CodeInvalidRequest, Message: "body holds more than one JSON value"}
	}
	return nil
}

// pathUUID reads a uuid path parameter, canonical lower case.
func pathUUID(r *request, name, code string) (string, error) {
	v := r.PathValue(name)
	id, ok := contract.CanonicalUUID(v)
	if !ok {
		return "", &elections.Error{Code: code, Message: fmt.Sprintf("%s %q is not a uuid", name, v)}
	}
	return id, nil
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}
