package votefilter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
)

// Request is what the admission logic needs of one POST /api/v1/votes, copied out of Envoy.
type Request struct {
	Authorization string
	ContentType   string
	RequestID     string
	Body          []byte
}

// Response is a complete local reply for Envoy to send.
type Response struct {
	Status  int
	Headers [][2]string
	Body    []byte
}

// Verifier checks a bearer token and returns the viewer id (the token's sub).
type Verifier interface {
	Verify(ctx context.Context, token string) (viewerID string, err error)
}

// DedupStore holds one key per (election, viewer): the edge's one-vote barrier.
type DedupStore interface {
	// Reserve records value for the pair unless a value is there already; false means taken.
	Reserve(ctx context.Context, electionID, viewerID, value string) (bool, error)
	// Release removes the pair's key if it still holds value, so a failed enqueue can be retried.
	Release(ctx context.Context, electionID, viewerID, value string) error
}

// Queue sends one vote and returns once the queue acknowledged it.
type Queue interface {
	Enqueue(ctx context.Context, v contract.QueuedVote) error
}

// Admitter decides on votes. It is safe for concurrent use and holds no Envoy types.
type Admitter struct {
	cfg       *Config
	elections map[string]*election
	verifier  Verifier
	dedup     DedupStore
	queue     Queue
	now       func() time.Time
	newID     func() (uuid.UUID, error)
	// Log receives failures that the viewer only sees as a 503.
	Log *slog.Logger
}

type election struct {
	Election
	candidates map[string]struct{}
}

// NewAdmitter indexes cfg's elections and wires the I/O dependencies.
func NewAdmitter(cfg *Config, v Verifier, d DedupStore, q Queue) *Admitter {
	idx := make(map[string]*election, len(cfg.Elections))
	for _, e := range cfg.Elections {
		ce := &election{Election: e, candidates: make(map[string]struct{}, len(e.CandidateIDs))}
		for _, c := range e.CandidateIDs {
			ce.candidates[strings.ToLower(c)] = struct{}{}
		}
		idx[strings.ToLower(e.ID)] = ce
	}
	return &Admitter{cfg: cfg, elections: idx, verifier: v, dedup: d, queue: q, now: time.Now, newID: uuid.NewV7,
		Log: slog.Default()}
}

// Rejection is a refused vote: a contract error code with its message and extra headers.
type Rejection struct {
	Code       string
	Message    string
	RetryAfter time.Duration
	// Challenge is the WWW-Authenticate value for 401s.
	Challenge string
}

func (r *Rejection) Error() string { return r.Code + ": " + r.Message }

func reject(code, format string, args ...any) *Rejection {
	return &Rejection{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Admit runs the whole admission of one vote and returns the reply to send. It does network
// I/O and must never run on an Envoy worker thread.
func (a *Admitter) Admit(ctx context.Context, req Request) Response {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(a.cfg.EnqueueTimeoutMs)*time.Millisecond)
	defer cancel()
	res, rej := a.admit(ctx, req)
	if rej != nil {
		return ErrorReply(rej, req.RequestID)
	}
	body, _ := json.Marshal(res)
	return Response{Status: http.StatusOK, Headers: jsonHeaders(), Body: body}
}

func (a *Admitter) admit(ctx context.Context, req Request) (*contract.VoteResult, *Rejection) {
	viewer, rej := a.authenticate(ctx, req.Authorization)
	if rej != nil {
		return nil, rej
	}
	vr, rej := a.ParseBody(req.ContentType, req.Body)
	if rej != nil {
		return nil, rej
	}
	now := a.now().UTC()
	if rej := a.checkElection(vr, now); rej != nil {
		return nil, rej
	}
	id, err := a.newID()
	if err != nil {
		return nil, &Rejection{Code: contract.CodeInternal, Message: "could not allocate a vote id"}
	}
	vote := contract.QueuedVote{
		VoteID: id.String(), ElectionID: strings.ToLower(vr.ElectionID), CandidateID: strings.ToLower(vr.CandidateID),
		UserID: viewer, Region: a.cfg.Region, RequestID: req.RequestID, AcceptedAt: now,
	}
	if rej := a.commit(ctx, vote); rej != nil {
		return nil, rej
	}
	return &contract.VoteResult{VoteID: vote.VoteID, Status: contract.VoteStatusAccepted, AcceptedAt: now}, nil
}

func (a *Admitter) authenticate(ctx context.Context, header string) (string, *Rejection) {
	const challenge = `Bearer realm="votes"`
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", &Rejection{Code: contract.CodeUnauthorized, Message: "a bearer token is required", Challenge: challenge}
	}
	viewer, err := a.verifier.Verify(ctx, strings.TrimSpace(token))
	if err != nil {
		return "", &Rejection{Code: contract.CodeUnauthorized, Message: "invalid token",
			Challenge: challenge + `, error="invalid_token"`}
	}
	return viewer, nil
}

// ParseBody checks the body against the contract's VoteRequest.
func (a *Admitter) ParseBody(contentType string, body []byte) (*contract.VoteRequest, *Rejection) {
	if mt, _, err := mime.ParseMediaType(contentType); err != nil || mt != "application/json" {
		return nil, reject(contract.CodeUnsupportedMedia, "Content-Type must be application/json")
	}
	if len(body) > a.cfg.MaxBodyBytes {
		return nil, reject(contract.CodePayloadTooLarge, "body exceeds %d bytes", a.cfg.MaxBodyBytes)
	}
	var vr contract.VoteRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&vr); err != nil {
		return nil, reject(contract.CodeInvalidRequest, "body is not a valid VoteRequest: %v", err)
	}
	// dec.More is not enough: it reports false before a stray '}' or ']'.
	if _, err := dec.Token(); err != io.EOF {
		return nil, reject(contract.CodeInvalidRequest, "body holds more than one JSON value")
	}
	switch {
	case !isUUID(vr.ElectionID):
		return nil, reject(contract.CodeInvalidElectionID, "electionId must be a uuid")
	case !isUUID(vr.CandidateID):
		return nil, reject(contract.CodeInvalidCandidateID, "candidateId must be a uuid")
	case utf8.RuneCountInString(vr.CaptchaToken) < contract.CaptchaTokenMinLength: // minLength counts characters
		return nil, reject(contract.CodeInvalidCaptcha, "captchaToken must be at least %d characters", contract.CaptchaTokenMinLength)
	}
	return &vr, nil
}

func (a *Admitter) checkElection(vr *contract.VoteRequest, now time.Time) *Rejection {
	e, ok := a.elections[strings.ToLower(vr.ElectionID)]
	if !ok {
		return reject(contract.CodeElectionNotFound, "election %s is not known", vr.ElectionID)
	}
	if e.Status != "ACTIVE" || now.Before(e.StartDate) || !now.Before(e.EndDate) {
		return reject(contract.CodeElectionNotOpen, "election %s is not open for voting", vr.ElectionID)
	}
	if _, ok := e.candidates[strings.ToLower(vr.CandidateID)]; !ok {
		return reject(contract.CodeCandidateNotFound, "candidate %s is not in election %s", vr.CandidateID, vr.ElectionID)
	}
	return nil
}

// commit reserves the dedup key, enqueues, and undoes the reservation if the enqueue failed,
// so that no viewer is left "already voted" with a vote that is not in the queue.
func (a *Admitter) commit(ctx context.Context, v contract.QueuedVote) *Rejection {
	value := v.VoteID + "|" + v.AcceptedAt.Format(time.RFC3339Nano)
	fresh, err := a.dedup.Reserve(ctx, v.ElectionID, v.UserID, value)
	if err != nil {
		a.Log.Error("dedup reserve failed", "requestId", v.RequestID, "electionId", v.ElectionID, "error", err)
		return &Rejection{Code: contract.CodeUnavailable, Message: "vote store unavailable, try again", RetryAfter: time.Second}
	}
	if !fresh {
		return reject(contract.CodeDuplicateVote, "User has already voted in this election")
	}
	if err := a.queue.Enqueue(ctx, v); err != nil {
		// The release gets its own deadline: ctx may be the one that just expired.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		if rerr := a.dedup.Release(rctx, v.ElectionID, v.UserID, value); rerr != nil {
			err = errors.Join(err, rerr)
		}
		a.Log.Error("vote not queued", "requestId", v.RequestID, "voteId", v.VoteID, "error", err)
		return &Rejection{Code: contract.CodeUnavailable, Message: "vote could not be queued, try again", RetryAfter: 2 * time.Second}
	}
	return nil
}

// ErrorReply renders a rejection as the contract's ErrorResponse.
func ErrorReply(r *Rejection, requestID string) Response {
	trace := requestID
	if !isUUID(trace) {
		trace = uuid.NewString()
	}
	body, _ := json.Marshal(contract.ErrorResponse{Code: r.Code, Message: r.Message, TraceID: trace})
	h := jsonHeaders()
	if r.Challenge != "" {
		h = append(h, [2]string{"www-authenticate", r.Challenge})
	}
	if r.RetryAfter > 0 {
		h = append(h, [2]string{"retry-after", strconv.Itoa(int((r.RetryAfter + time.Second - 1) / time.Second))})
	}
	return Response{Status: contract.Status(r.Code), Headers: h, Body: body}
}

func jsonHeaders() [][2]string {
	return [][2]string{{"content-type", "application/json"}, {"cache-control", "no-store"}}
}
