package votefilter

import (
	"bytes"
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
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/token"
)

// Request is what the admission logic needs of one POST /api/v1/votes, copied out of Envoy.
type Request struct {
	Authorization string
	ContentType   string
	RequestID     string
	ClientIP      string
	Body          []byte
}

// Response is a complete local reply for Envoy to send, with what the stats need to know.
type Response struct {
	Status  int
	Headers [][2]string
	Body    []byte
	// Outcome names what happened, for counters: accepted, duplicate, rate_limited, ...
	Outcome string
	// Reason refines Outcome (e.g. which JWT check failed, which limit).
	Reason string
}

// Verifier checks a bearer token and says who holds it.
type Verifier interface {
	Identify(ctx context.Context, raw string) (token.Identity, error)
}

// Gate is the shared admission store: rate limits, replay protection and the one-vote key,
// decided in one round trip.
type Gate interface {
	Admit(ctx context.Context, a dedup.Attempt) (dedup.Outcome, error)
	Release(ctx context.Context, a dedup.Attempt) error
	Lookup(ctx context.Context, electionID, viewerID string) (string, error)
}

// Queue sends one vote and returns once the queue acknowledged it.
type Queue interface {
	Enqueue(ctx context.Context, v contract.QueuedVote) error
}

// Outcomes reported in Response.Outcome.
const (
	OutcomeAccepted      = "accepted"
	OutcomeDuplicate     = "duplicate"
	OutcomeRateLimited   = "rate_limited"
	OutcomeJWTRejected   = "jwt_rejected"
	OutcomeForbidden     = "forbidden"
	OutcomeCaptchaFailed = "captcha_failed"
	OutcomeEnqueueFailed = "enqueue_failed"
	OutcomeStoreFailed   = "store_failed"
	OutcomeInvalid       = "invalid"
	OutcomeNotOpen       = "not_open"
	OutcomeAnswered      = "answered"
	OutcomeInternal      = "internal_error"
)

// Admitter decides on votes. It is immutable once built (a config push builds a new one),
// safe for concurrent use, and holds no Envoy types.
type Admitter struct {
	cfg       *Config
	elections map[string]*election
	verifier  Verifier
	gate      Gate
	queue     Queue
	pow       *captcha.PoW
	now       func() time.Time
	newID     func() (uuid.UUID, error)
	// Log receives failures that the viewer only sees as a 503.
	Log *slog.Logger
	// releaseLater undoes, in the background, a reservation whose outcome is unknown.
	releaseLater func(dedup.Attempt)
}

// Releases of reservations whose gate call failed. A hung Redis primary still runs the
// script sitting in its socket buffer when it resumes; the viewer would then be "already
// voted" with nothing queued. Compare-and-delete of our own value is safe at any time, so it
// is repeated across a plausible recovery horizon, every time (a release that finds nothing
// proves nothing: the script may run after it).
var (
	ambiguousReleaseSchedule = []time.Duration{2 * time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, 60 * time.Second}
	// ambiguousReleaseSlots bounds the sleeping releasers during a long outage (~4 KiB each).
	ambiguousReleaseSlots = make(chan struct{}, 10000)
)

type election struct {
	Election
	candidates map[string]struct{}
}

// NewAdmitter indexes cfg's elections and wires the I/O dependencies. cfg must come from
// Parse, which guarantees the captcha settings are usable.
func NewAdmitter(cfg *Config, v Verifier, g Gate, q Queue) (*Admitter, error) {
	idx := make(map[string]*election, len(cfg.Elections))
	for _, e := range cfg.Elections {
		ce := &election{Election: e, candidates: make(map[string]struct{}, len(e.CandidateIDs))}
		for _, c := range e.CandidateIDs {
			ce.candidates[strings.ToLower(c)] = struct{}{}
		}
		idx[strings.ToLower(e.ID)] = ce
	}
	a := &Admitter{cfg: cfg, elections: idx, verifier: v, gate: g, queue: q, now: time.Now, newID: uuid.NewV7,
		Log: slog.Default()}
	a.releaseLater = a.releaseInBackground
	if cfg.Captcha.Mode == "" {
		return nil, errors.New("votefilter: captcha mode unset: build the config with Parse")
	}
	if cfg.Captcha.Mode == captcha.ModePoW {
		pow, err := captcha.NewPoW([]byte(cfg.Captcha.PoW.Secret), cfg.Captcha.PoW.Difficulty,
			time.Duration(cfg.Captcha.PoW.TTLSeconds)*time.Second)
		if err != nil {
			return nil, err
		}
		a.pow = pow
	}
	return a, nil
}

// Config is the configuration the admitter was built from.
func (a *Admitter) Config() *Config { return a.cfg }

// Rejection is a refused request: a contract error code with its message and extra headers.
type Rejection struct {
	Code       string
	Message    string
	RetryAfter time.Duration
	// Challenge is the WWW-Authenticate value for 401s.
	Challenge string
	// Outcome and Reason feed the stats; Outcome defaults to "invalid".
	Outcome, Reason string
}

func (r *Rejection) Error() string { return r.Code + ": " + r.Message }

func reject(code, format string, args ...any) *Rejection {
	return &Rejection{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Ballot is a vote that passed every check that needs no shared state.
type Ballot struct {
	Vote     contract.QueuedVote
	ClientIP string
	// Captcha is the viewer's captcha token, for the siteverify call.
	Captcha string
	// NeedsSiteverify says the adapter must call the siteverify service before Commit.
	NeedsSiteverify bool
	pow             *captcha.Solved
}

// Admit runs the whole admission of one vote when no siteverify call is needed. It does
// network I/O and must never run on an Envoy worker thread.
func (a *Admitter) Admit(ctx context.Context, req Request) Response {
	b, rej := a.Check(ctx, req)
	if rej != nil {
		return ErrorReply(rej, req.RequestID)
	}
	if b.NeedsSiteverify {
		return ErrorReply(&Rejection{Code: contract.CodeInternal, Message: "captcha check not wired",
			Outcome: OutcomeInternal}, req.RequestID)
	}
	return a.Commit(ctx, b)
}

// Check authenticates the viewer and checks the body, the election and (for proof of work)
// the captcha. It touches no shared state: CPU only.
func (a *Admitter) Check(ctx context.Context, req Request) (*Ballot, *Rejection) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(a.cfg.EnqueueTimeoutMs)*time.Millisecond)
	defer cancel()
	id, rej := a.authenticate(ctx, req.Authorization)
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
	b := &Ballot{ClientIP: req.ClientIP, Captcha: vr.CaptchaToken}
	switch a.cfg.Captcha.Mode {
	case captcha.ModePoW:
		solved, err := a.pow.Verify(vr.CaptchaToken, now)
		if err != nil {
			return nil, &Rejection{Code: contract.CodeCaptchaFailed, Message: "captcha check failed: solve a fresh challenge",
				Outcome: OutcomeCaptchaFailed, Reason: "pow"}
		}
		b.pow = &solved
	case captcha.ModeSiteverify:
		b.NeedsSiteverify = true
	}
	voteID, err := a.newID()
	if err != nil {
		return nil, &Rejection{Code: contract.CodeInternal, Message: "could not allocate a vote id", Outcome: OutcomeInternal}
	}
	b.Vote = contract.QueuedVote{
		VoteID: voteID.String(), ElectionID: strings.ToLower(vr.ElectionID), CandidateID: strings.ToLower(vr.CandidateID),
		UserID: id.Subject, Region: a.cfg.Region, RequestID: req.RequestID, AcceptedAt: now,
	}
	return b, nil
}

// Commit takes the viewer's one vote in the shared store and enqueues it, releasing the
// reservation again if the enqueue fails, so no viewer is left "already voted" with a vote
// that is not in the queue. The 200 is built only after SQS acknowledged the message.
func (a *Admitter) Commit(ctx context.Context, b *Ballot) Response {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(a.cfg.EnqueueTimeoutMs)*time.Millisecond)
	defer cancel()
	v := b.Vote
	value := dedup.FormatValue(v.VoteID, v.AcceptedAt)
	attempt := dedup.Attempt{
		ElectionID: v.ElectionID, ViewerID: v.UserID, ClientIP: b.ClientIP, Value: value,
		PerViewer: dedup.Limit{Max: a.cfg.Limits.PerViewer.Max, Window: seconds(a.cfg.Limits.PerViewer.WindowSeconds)},
		PerIP:     dedup.Limit{Max: a.cfg.Limits.PerIP.Max, Window: seconds(a.cfg.Limits.PerIP.WindowSeconds)},
	}
	if b.pow != nil {
		attempt.PoWID, attempt.PoWExpiry = b.pow.ID, b.pow.Expiry
	}
	out, err := a.gate.Admit(ctx, attempt)
	if err != nil {
		a.Log.Error("admission store failed", "requestId", v.RequestID, "electionId", v.ElectionID, "error", err)
		a.releaseLater(attempt)
		return ErrorReply(&Rejection{Code: contract.CodeUnavailable, Message: "vote store unavailable, try again",
			RetryAfter: time.Second, Outcome: OutcomeStoreFailed}, v.RequestID)
	}
	switch out.Verdict {
	case dedup.Duplicate:
		return ErrorReply(&Rejection{Code: contract.CodeDuplicateVote, Message: "User has already voted in this election",
			Outcome: OutcomeDuplicate}, v.RequestID)
	case dedup.ViewerLimited, dedup.IPLimited:
		reason := "viewer"
		if out.Verdict == dedup.IPLimited {
			reason = "ip"
		}
		return ErrorReply(&Rejection{Code: contract.CodeRateLimited, Message: "too many attempts, slow down",
			RetryAfter: out.RetryAfter, Outcome: OutcomeRateLimited, Reason: reason}, v.RequestID)
	case dedup.Replayed:
		return ErrorReply(&Rejection{Code: contract.CodeCaptchaFailed, Message: "captcha already used: solve a fresh challenge",
			Outcome: OutcomeCaptchaFailed, Reason: "replay"}, v.RequestID)
	}
	if err := a.queue.Enqueue(ctx, v); err != nil {
		// The release gets its own deadline: ctx may be the one that just expired.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		if rerr := a.gate.Release(rctx, attempt); rerr != nil {
			err = errors.Join(err, rerr)
		}
		a.Log.Error("vote not queued", "requestId", v.RequestID, "voteId", v.VoteID, "error", err)
		return ErrorReply(&Rejection{Code: contract.CodeUnavailable, Message: "vote could not be queued, try again",
			RetryAfter: 2 * time.Second, Outcome: OutcomeEnqueueFailed}, v.RequestID)
	}
	body, _ := json.Marshal(contract.VoteResult{VoteID: v.VoteID, Status: contract.VoteStatusAccepted, AcceptedAt: v.AcceptedAt})
	return Response{Status: http.StatusOK, Headers: jsonHeaders(), Body: body, Outcome: OutcomeAccepted}
}

func (a *Admitter) releaseInBackground(at dedup.Attempt) {
	select {
	case ambiguousReleaseSlots <- struct{}{}:
	default:
		a.Log.Error("too many pending releases; this reservation may stay", "electionId", at.ElectionID, "viewer", at.ViewerID)
		return
	}
	go func() {
		defer func() { <-ambiguousReleaseSlots }()
		for _, d := range ambiguousReleaseSchedule {
			time.Sleep(d)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = a.gate.Release(ctx, at) // errors: Redis still down; the next round retries
			cancel()
		}
	}()
}

// CaptchaRejected is the reply when the siteverify service refused the token (err wraps
// captcha.ErrFailed) or could not be asked.
func CaptchaRejected(err error, requestID string) Response {
	if errors.Is(err, captcha.ErrFailed) {
		return ErrorReply(&Rejection{Code: contract.CodeCaptchaFailed, Message: "captcha check failed",
			Outcome: OutcomeCaptchaFailed, Reason: "siteverify"}, requestID)
	}
	return ErrorReply(&Rejection{Code: contract.CodeUnavailable, Message: "captcha service unavailable, try again",
		RetryAfter: time.Second, Outcome: OutcomeCaptchaFailed, Reason: "unavailable"}, requestID)
}

const bearerChallenge = `Bearer realm="votes"`

func (a *Admitter) authenticate(ctx context.Context, header string) (token.Identity, *Rejection) {
	scheme, raw, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(raw) == "" {
		return token.Identity{}, &Rejection{Code: contract.CodeUnauthorized, Message: "a bearer token is required",
			Challenge: bearerChallenge, Outcome: OutcomeJWTRejected, Reason: "missing"}
	}
	id, err := a.verifier.Identify(ctx, strings.TrimSpace(raw))
	if err != nil {
		return token.Identity{}, &Rejection{Code: contract.CodeUnauthorized, Message: "invalid token",
			Challenge: bearerChallenge + `, error="invalid_token"`, Outcome: OutcomeJWTRejected, Reason: token.Reason(err)}
	}
	return id, nil
}

// AuthorizeAdmin lets a request through to the admin API only with a valid token holding the
// admin permission; it returns the reply to send instead, or nil. The control plane checks
// again: this is the edge's first line.
func (a *Admitter) AuthorizeAdmin(ctx context.Context, authorization, requestID string) *Response {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(a.cfg.EnqueueTimeoutMs)*time.Millisecond)
	defer cancel()
	id, rej := a.authenticate(ctx, authorization)
	if rej != nil {
		r := ErrorReply(rej, requestID)
		return &r
	}
	if !id.Has(a.cfg.JWT.AdminPermission) {
		r := ErrorReply(&Rejection{Code: contract.CodeForbidden, Message: "admin permission required",
			Outcome: OutcomeForbidden}, requestID)
		return &r
	}
	return nil
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
	dec := json.NewDecoder(bytes.NewReader(body))
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
	// The window is checked here too, so a slow config push cannot keep a closed window open.
	if e.Status != "ACTIVE" || now.Before(e.StartDate) || !now.Before(e.EndDate) {
		return &Rejection{Code: contract.CodeElectionNotOpen, Message: fmt.Sprintf("election %s is not open for voting", vr.ElectionID),
			Outcome: OutcomeNotOpen}
	}
	if _, ok := e.candidates[strings.ToLower(vr.CandidateID)]; !ok {
		return reject(contract.CodeCandidateNotFound, "candidate %s is not in election %s", vr.CandidateID, vr.ElectionID)
	}
	return nil
}

// Challenge issues a proof-of-work challenge (GET /api/v1/votes/challenge).
func (a *Admitter) Challenge(requestID string) Response {
	if a.pow == nil {
		return ErrorReply(reject(contract.CodeNotFound, "captcha mode %s issues no challenges", a.cfg.Captcha.Mode), requestID)
	}
	c, err := a.pow.Issue(a.now())
	if err != nil {
		return ErrorReply(&Rejection{Code: contract.CodeInternal, Message: "could not issue a challenge"}, requestID)
	}
	body, _ := json.Marshal(c)
	return Response{Status: http.StatusOK, Headers: jsonHeaders(), Body: body, Outcome: OutcomeAnswered}
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
	outcome := r.Outcome
	if outcome == "" {
		outcome = OutcomeInvalid
	}
	return Response{Status: contract.Status(r.Code), Headers: h, Body: body, Outcome: outcome, Reason: r.Reason}
}

func jsonHeaders() [][2]string {
	return [][2]string{{"content-type", "application/json"}, {"cache-control", "no-store"}}
}

func seconds(n int) time.Duration { return time.Duration(n) * time.Second }
