package votefilter

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/filters/votefilter/homeregion"
)

// Request is what the admission logic needs of one POST /api/v1/votes, copied out of Envoy.
type Request struct {
	Authorization string
	ContentType   string
	RequestID     string
	ClientIP      string
	Body          []byte
	// TraceParent is the W3C trace context of Envoy's span for the request, or "".
	TraceParent string
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
	// HomeRegion is the region whose store decided, once the viewer is known; "" on a
	// single-region edge and for requests refused before that.
	HomeRegion string
}

// Verifier checks a bearer token and says who holds it.
type Verifier interface {
	Verify(ctx context.Context, raw string) (auth.Principal, error)
}

// Gate is the shared admission store: rate limits, replay protection and the viewer's one
// vote, held (Reserve) before the vote is sent and made final (Confirm) once SQS has it.
type Gate interface {
	Reserve(ctx context.Context, a dedup.Attempt) (dedup.Outcome, error)
	Recheck(ctx context.Context, a dedup.Attempt) (dedup.Outcome, error)
	Confirm(ctx context.Context, a dedup.Attempt) (dedup.Confirmation, error)
	Release(ctx context.Context, a dedup.Attempt) error
	Lookup(ctx context.Context, electionID, viewerID string) (dedup.Entry, error)
}

// Queue sends one vote and returns once the queue acknowledged it. An error that reports
// NotSent() == true means the vote certainly did not reach the queue; any other error leaves
// it unknown (a send timed out or its connection broke after the request went out).
type Queue interface {
	Enqueue(ctx context.Context, v contract.QueuedVote) error
}

// notSent reports an enqueue error that proves the vote is not in the queue.
func notSent(err error) bool {
	var ns interface{ NotSent() bool }
	return errors.As(err, &ns) && ns.NotSent()
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
	OutcomeBusy          = "busy"
	OutcomeInvalid       = "invalid"
	OutcomeNotOpen       = "not_open"
	OutcomeAnswered      = "answered"
	OutcomeInternal      = "internal_error"
)

// Store is one region's admission store and vote queue.
type Store struct {
	Gate  Gate
	Queue Queue
}

// Admitter decides on votes. It is immutable once built (a config push builds a new one),
// safe for concurrent use, and holds no Envoy types.
type Admitter struct {
	cfg       *edgeconfig.Config
	elections map[string]*election
	verifier  Verifier
	// local is this region's store; stores holds every region's, by name, when the fleet has
	// several (cfg.PeerRegions), and regions their names.
	local   Store
	stores  map[string]Store
	regions []string
	pow     *captcha.PoW
	now     func() time.Time
	newID   func() (uuid.UUID, error)
	// Log receives failures that the viewer only sees as a 503.
	Log *slog.Logger
	// releaseLater undoes, in the background, a reservation whose Reserve call failed;
	// confirmLater retries Confirm for a queued vote. Tests replace them.
	releaseLater, confirmLater func(Gate, dedup.Attempt)
}

type election struct {
	edgeconfig.Election
	candidates map[string]struct{}
}

// NewAdmitter indexes cfg's elections and wires the I/O dependencies. cfg must come from
// edgeconfig.Parse, which guarantees the captcha settings are usable. powKeys are the proof-of-work
// secrets, read from cfg.Captcha.PoW.SecretFile; only pow mode needs them.
func NewAdmitter(cfg *edgeconfig.Config, v Verifier, g Gate, q Queue, powKeys captcha.Keys) (*Admitter, error) {
	idx := make(map[string]*election, len(cfg.Elections))
	for _, e := range cfg.Elections {
		ce := &election{Election: e, candidates: make(map[string]struct{}, len(e.CandidateIDs))}
		for _, c := range e.CandidateIDs {
			ce.candidates[strings.ToLower(c)] = struct{}{}
		}
		idx[strings.ToLower(e.ID)] = ce
	}
	a := &Admitter{cfg: cfg, elections: idx, verifier: v, local: Store{Gate: g, Queue: q}, now: time.Now, newID: uuid.NewV7,
		Log: slog.Default()}
	a.releaseLater, a.confirmLater = a.releaseInBackground, a.confirmInBackground
	if cfg.Captcha.Mode == "" {
		return nil, errors.New("votefilter: captcha mode unset: build the config with edgeconfig.Parse")
	}
	if cfg.Captcha.Mode == edgeconfig.CaptchaPoW {
		pow, err := captcha.NewPoW(powKeys, cfg.Captcha.PoW.Difficulty,
			time.Duration(cfg.Captcha.PoW.TTLSeconds)*time.Second)
		if err != nil {
			return nil, err
		}
		a.pow = pow
	}
	return a, nil
}

// WithPeerRegions hands the admitter the store of every region in cfg.PeerRegions, by name:
// from then on each viewer's vote is decided by their home region's store and sent to its
// queue (package homeregion), and the status of a viewer is read there. Call it once, before
// the admitter is used.
func (a *Admitter) WithPeerRegions(peers map[string]Store) error {
	stores := map[string]Store{a.cfg.Region: a.local}
	for _, p := range a.cfg.PeerRegions {
		st, ok := peers[p.Name]
		if !ok || st.Gate == nil || st.Queue == nil {
			return fmt.Errorf("votefilter: no store for peer region %q", p.Name)
		}
		stores[p.Name] = st
	}
	a.stores, a.regions = stores, a.cfg.RegionNames()
	return nil
}

// home is the home region of the viewer with the token's claimed home and its store; "" and
// this region's store on a single-region edge.
func (a *Admitter) home(viewer, claimed string) (string, Store) {
	if a.stores == nil {
		return "", a.local
	}
	h := homeregion.Pick(claimed, viewer, a.regions)
	return h, a.stores[h]
}

// storeOf is the store of a home region as home returned it.
func (a *Admitter) storeOf(home string) Store {
	if st, ok := a.stores[home]; ok {
		return st
	}
	return a.local
}

// Config is the configuration the admitter was built from.
func (a *Admitter) Config() *edgeconfig.Config { return a.cfg }

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
		a.logRejection(rej, req.RequestID, vr.ElectionID)
		return nil, rej
	}
	b := &Ballot{ClientIP: req.ClientIP, Captcha: vr.CaptchaToken}
	switch a.cfg.Captcha.Mode {
	case edgeconfig.CaptchaPoW:
		solved, err := a.pow.Verify(vr.CaptchaToken, now)
		if err != nil {
			rej := &Rejection{Code: contract.CodeCaptchaFailed, Message: "captcha check failed: solve a fresh challenge",
				Outcome: OutcomeCaptchaFailed, Reason: "pow"}
			a.logRejection(rej, req.RequestID, vr.ElectionID)
			return nil, rej
		}
		b.pow = &solved
	case edgeconfig.CaptchaSiteverify:
		b.NeedsSiteverify = true
	}
	voteID, err := a.newID()
	if err != nil {
		return nil, &Rejection{Code: contract.CodeInternal, Message: "could not allocate a vote id", Outcome: OutcomeInternal}
	}
	b.Vote = contract.QueuedVote{
		VoteID: voteID.String(), ElectionID: strings.ToLower(vr.ElectionID), CandidateID: strings.ToLower(vr.CandidateID),
		UserID: id.Subject, Region: a.cfg.Region, RequestID: req.RequestID, AcceptedAt: now,
		TraceParent: req.TraceParent,
	}
	b.Vote.HomeRegion, _ = a.home(id.Subject, id.HomeRegion)
	return b, nil
}

// Commit takes the viewer's one vote in the shared store, enqueues it and makes it final.
// The 200 is built only after SQS acknowledged the message. A 409 comes only from a final
// entry, i.e. a vote of the viewer that is queued or stored: a reservation whose attempt died
// or failed never answers "already voted" (see package dedup).
func (a *Admitter) Commit(ctx context.Context, b *Ballot) (r Response) {
	budget := time.Duration(a.cfg.EnqueueTimeoutMs) * time.Millisecond
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	v := b.Vote
	home, st := v.HomeRegion, a.storeOf(v.HomeRegion)
	defer func() { r.HomeRegion = home }()
	at := dedup.Attempt{
		ElectionID: v.ElectionID, ViewerID: v.UserID, ClientIP: b.ClientIP,
		VoteID: v.VoteID, AcceptedAt: v.AcceptedAt, CandidateID: v.CandidateID, Owner: newOwner(), Budget: budget,
		PerViewer: a.cfg.Limits.PerViewer, PerIP: a.cfg.Limits.PerIP,
	}
	if b.pow != nil {
		at.PoWID, at.PoWExpiry = b.pow.ID, b.pow.Expiry
	}
	out, err := a.reserve(ctx, st.Gate, at, time.Now().Add(budget/2))
	if err != nil {
		a.Log.Error("admission store failed", "requestId", v.RequestID, "electionId", v.ElectionID, "err", err)
		a.releaseLater(st.Gate, at)
		return ErrorReply(&Rejection{Code: contract.CodeUnavailable, Message: "vote store unavailable, try again",
			RetryAfter: time.Second, Outcome: OutcomeStoreFailed}, v.RequestID)
	}
	switch out.Verdict {
	case dedup.Duplicate:
		a.logDecision(EventVoteDuplicate, v.RequestID, v.ElectionID)
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
		a.logDecision(EventCaptchaFailed, v.RequestID, v.ElectionID, "reason", "replay")
		return ErrorReply(&Rejection{Code: contract.CodeCaptchaFailed, Message: "captcha already used: solve a fresh challenge",
			Outcome: OutcomeCaptchaFailed, Reason: "replay"}, v.RequestID)
	case dedup.Busy:
		return ErrorReply(&Rejection{Code: contract.CodeUnavailable,
			Message:    "an earlier attempt of this vote is still being processed, try again",
			RetryAfter: min(max(out.RetryAfter, time.Second), 30*time.Second), Outcome: OutcomeBusy}, v.RequestID)
	case dedup.Adopted:
		// An earlier attempt at this very vote ended without knowing whether SQS has it: send it
		// again under its own id, so if both copies arrive the processor keeps one.
		a.Log.Info("vote adopted from an earlier attempt", "requestId", v.RequestID, "voteId", out.VoteID, "electionId", v.ElectionID)
		v.VoteID, v.AcceptedAt = out.VoteID, out.AcceptedAt
		at.VoteID, at.AcceptedAt = out.VoteID, out.AcceptedAt
	}
	if err := st.Queue.Enqueue(ctx, v); err != nil {
		// An adopted vote stays held even when this copy never left: the first copy's fate is
		// still unknown.
		if notSent(err) && out.Verdict != dedup.Adopted {
			// The release gets its own deadline: ctx may be the one that just expired.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			if rerr := st.Gate.Release(rctx, at); rerr != nil {
				err = errors.Join(err, rerr)
			}
			a.Log.Error("vote not queued", "requestId", v.RequestID, "voteId", v.VoteID, "err", err)
		} else {
			// SQS may hold it: the reservation stays, so a retry of the same vote adopts its id and
			// a retry with another candidate waits for the outcome instead of voting twice.
			a.Log.Error("vote may not be queued; the reservation stays for a retry to adopt", "requestId", v.RequestID,
				"voteId", v.VoteID, "err", err)
		}
		return ErrorReply(&Rejection{Code: contract.CodeUnavailable, Message: "vote could not be queued, try again",
			RetryAfter: 2 * time.Second, Outcome: OutcomeEnqueueFailed}, v.RequestID)
	}
	// The vote is in the queue; confirming gets its own deadline, because the 200 must not
	// depend on how much of the budget SQS used.
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), confirmTimeout)
	defer ccancel()
	switch c, err := st.Gate.Confirm(cctx, at); {
	case err != nil:
		// The vote counts (SQS has it); its entry stays pending until a retry of Confirm or the
		// processor makes it final.
		a.Log.Warn("queued vote not confirmed in the store; retrying in the background", "requestId", v.RequestID,
			"voteId", v.VoteID, "err", err)
		a.confirmLater(st.Gate, at)
	case c != dedup.Confirmed:
		// Another vote of this viewer won the store while this one was being sent: this copy will
		// be dropped as a second vote, so it must not be answered as the counted one.
		a.Log.Warn("queued vote lost the store to another vote of the viewer", "requestId", v.RequestID,
			"voteId", v.VoteID, "electionId", v.ElectionID)
		a.logDecision(EventVoteDuplicate, v.RequestID, v.ElectionID, "reason", "superseded")
		return ErrorReply(&Rejection{Code: contract.CodeDuplicateVote, Message: "User has already voted in this election",
			Outcome: OutcomeDuplicate, Reason: "superseded"}, v.RequestID)
	}
	a.logDecision(EventVoteAccepted, v.RequestID, v.ElectionID, "voteId", v.VoteID, "region", v.Region,
		"homeRegion", home)
	body, _ := json.Marshal(contract.VoteResult{VoteID: v.VoteID, Status: contract.VoteStatusAccepted, AcceptedAt: v.AcceptedAt})
	return Response{Status: http.StatusOK, Headers: jsonHeaders(), Body: body, Outcome: OutcomeAccepted}
}

// reserve asks the store for the viewer and, while another attempt of the same viewer is in
// flight, waits for its outcome until waitUntil: the viewer then learns "already voted" or gets
// the vote, instead of a guess.
func (a *Admitter) reserve(ctx context.Context, gate Gate, at dedup.Attempt, waitUntil time.Time) (dedup.Outcome, error) {
	out, err := gate.Reserve(ctx, at)
	pause := busyPoll
	for err == nil && out.Verdict == dedup.Busy {
		wait := pause
		if out.RetryAfter > 0 {
			wait = max(min(pause, out.RetryAfter), 5*time.Millisecond)
		}
		if time.Now().Add(wait).After(waitUntil) {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return out, nil
		case <-time.After(wait):
		}
		pause = min(2*pause, 200*time.Millisecond)
		out, err = gate.Recheck(ctx, at)
	}
	return out, err
}

// busyPoll is the first pause before asking again about a viewer another attempt holds; the
// typical attempt is done within tens of milliseconds.
const busyPoll = 20 * time.Millisecond

// confirmTimeout bounds one Confirm call.
const confirmTimeout = time.Second

// Background retries of the store after a call failed. Each is safe at any time, so it is
// repeated across a plausible recovery horizon (a release that finds nothing proves nothing: a
// script stuck in a hung server's socket may still run after it). Past the pending TTL there
// is nothing left to do: the entry expired or was made final by the processor.
var (
	releaseSchedule = []time.Duration{time.Second, 2 * time.Second, 7 * time.Second, 20 * time.Second}
	confirmSchedule = []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second}
	// backgroundSlots bounds the sleeping retries during a long outage (~4 KiB each).
	backgroundSlots = make(chan struct{}, 10000)
)

// releaseInBackground undoes a reservation whose Reserve call failed: the script may still
// run, and nothing was sent. The release matches the attempt's owner, so it never drops a
// reservation a retry has adopted since.
func (a *Admitter) releaseInBackground(gate Gate, at dedup.Attempt) {
	a.inBackground(at, "release", releaseSchedule, func(ctx context.Context) bool {
		_ = gate.Release(ctx, at) // errors: Redis still down; the next round retries
		return false
	})
}

// confirmInBackground retries Confirm for a vote SQS acknowledged.
func (a *Admitter) confirmInBackground(gate Gate, at dedup.Attempt) {
	a.inBackground(at, "confirm", confirmSchedule, func(ctx context.Context) bool {
		_, err := gate.Confirm(ctx, at)
		return err == nil
	})
}

func (a *Admitter) inBackground(at dedup.Attempt, what string, schedule []time.Duration, try func(context.Context) bool) {
	select {
	case backgroundSlots <- struct{}{}:
	default:
		a.Log.Error("too many pending store retries; this one is dropped", "what", what, "electionId", at.ElectionID,
			"voteId", at.VoteID)
		return
	}
	go func() {
		defer func() { <-backgroundSlots }()
		for _, d := range schedule {
			time.Sleep(d)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			done := try(ctx)
			cancel()
			if done {
				return
			}
		}
	}()
}

// newOwner names one attempt; 64 random bits are plenty among the attempts at one vote.
func newOwner() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
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

func (a *Admitter) authenticate(ctx context.Context, header string) (auth.Principal, *Rejection) {
	raw, ok := auth.BearerToken(header)
	if !ok {
		return auth.Principal{}, &Rejection{Code: contract.CodeUnauthorized, Message: "a bearer token is required",
			Challenge: bearerChallenge, Outcome: OutcomeJWTRejected, Reason: "missing"}
	}
	id, err := a.verifier.Verify(ctx, raw)
	if err != nil {
		return auth.Principal{}, &Rejection{Code: contract.CodeUnauthorized, Message: "invalid token",
			Challenge: bearerChallenge + `, error="invalid_token"`, Outcome: OutcomeJWTRejected, Reason: auth.Reason(err)}
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
	case !contract.IsUUID(vr.ElectionID):
		return nil, reject(contract.CodeInvalidElectionID, "electionId must be a uuid")
	case !contract.IsUUID(vr.CandidateID):
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
	if e.Status != contract.StatusActive || now.Before(e.StartDate) || !now.Before(e.EndDate) {
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
	body, _ := json.Marshal(contract.ErrorResponse{Code: r.Code, Message: r.Message, TraceID: contract.TraceID(requestID)})
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
