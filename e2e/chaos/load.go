package chaos

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
)

// viewer is one unique viewer: one token, one ballot sent unchanged on every retry.
type viewer struct {
	sub       string
	token     string
	candidate string
	body      []byte

	first  outcome // the vote during the load
	revote outcome // the same request once more after the load, for viewers whose first was a 200
}

// outcome is what one viewer's app saw for one vote, retries included.
type outcome struct {
	attempts   []attempt
	final      bool   // a definitive answer came: 200, or any 4xx but 429
	status     int    // the definitive answer's status
	code       string // its error code, for non-200 answers
	voteID     string // of a 200
	acceptedAt time.Time
	took       time.Duration // from the first attempt to the definitive answer
}

func (o *outcome) ok() bool { return o.final && o.status == http.StatusOK }
func (o *outcome) duplicate() bool {
	return o.final && o.status == http.StatusConflict && o.code == contract.CodeDuplicateVote
}

// attempt is one HTTP request of a viewer.
type attempt struct {
	status int    // 0: no HTTP answer
	err    string // for status 0: timeout, refused, reset or other
	took   time.Duration
}

// mintViewers asks the development IdP for n fresh viewers' tokens in one call and gives each
// viewer a random candidate.
func mintViewers(ctx context.Context, s *devstack.Stack, e devstack.Election, n int) ([]*viewer, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/tokens?n=%d", s.IdPURL(), n), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mint tokens: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("mint tokens: %d %v", resp.StatusCode, err)
	}
	tokens := strings.Fields(string(b))
	if len(tokens) != n {
		return nil, fmt.Errorf("mint tokens: got %d of %d", len(tokens), n)
	}
	viewers := make([]*viewer, n)
	for i, tok := range tokens {
		sub, err := subject(tok)
		if err != nil {
			return nil, err
		}
		c := e.Candidates[rand.IntN(len(e.Candidates))].ID
		body, _ := json.Marshal(contract.VoteRequest{ElectionID: e.ID, CandidateID: c,
			CaptchaToken: "captcha-is-off-in-the-chaos-suite"})
		viewers[i] = &viewer{sub: sub, token: tok, candidate: c, body: body}
	}
	return viewers, nil
}

// subject reads a JWT's sub without verifying it: it is the user_id of the viewer's row.
func subject(tok string) (string, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", errors.New("token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("token payload: %w", err)
	}
	var claims struct{ Sub string }
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Sub == "" {
		return "", fmt.Errorf("token has no sub: %v", err)
	}
	return claims.Sub, nil
}

// loader drives a closed loop of clients over the viewers, each viewer retried to a final
// answer or its give-up limit.
type loader struct {
	url    string
	client *http.Client
	cfg    Config

	dispatched, answered, inflight atomic.Int64
	// budget is how many viewers may start so far: the faults hold the load back so that it
	// cannot run out of viewers before the last fault.
	budget                      atomic.Int64
	ok, duplicates, unavailable atomic.Int64
	finished                    chan struct{}

	// While a fault lasts, new viewers start at most rate per second (0: no cap).
	mu   sync.Mutex
	rate float64
	next time.Time

	// unavailableAt are the times of the 503 answers (the first 100,000), to tell how long
	// a fault kept the edge answering 503; bare503 counts those without a Retry-After.
	unavailableMu sync.Mutex
	unavailableAt []time.Time
	bare503       atomic.Int64
}

// unavailableWithin is the span from the first to the last 503 answered in [from, to].
func (l *loader) unavailableWithin(from, to time.Time) (first, last time.Time, n int) {
	l.unavailableMu.Lock()
	defer l.unavailableMu.Unlock()
	for _, t := range l.unavailableAt {
		if t.Before(from) || t.After(to) {
			continue
		}
		if n == 0 || t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
		n++
	}
	return first, last, n
}

func newLoader(url string, cfg Config, budget int) *loader {
	l := &loader{url: url, cfg: cfg, finished: make(chan struct{}),
		client: &http.Client{Transport: &http.Transport{
			// One connection per client, reused as an app's would be; a killed Envoy breaks them all.
			MaxIdleConns: cfg.Clients, MaxIdleConnsPerHost: cfg.Clients, MaxConnsPerHost: cfg.Clients,
			IdleConnTimeout: 30 * time.Second, DisableCompression: true,
			DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		}}}
	l.budget.Store(int64(budget))
	return l
}

// limit caps how many new viewers start per second; 0 lifts the cap.
func (l *loader) limit(rate float64) {
	l.mu.Lock()
	l.rate = rate
	l.mu.Unlock()
}

func (l *loader) pace(ctx context.Context) {
	l.mu.Lock()
	if l.rate <= 0 {
		l.mu.Unlock()
		return
	}
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	wait := l.next.Sub(now)
	l.next = l.next.Add(time.Duration(float64(time.Second) / l.rate))
	l.mu.Unlock()
	sleep(ctx, wait)
}

// over says every viewer of the run has a final answer or gave up.
func (l *loader) over() bool {
	select {
	case <-l.finished:
		return true
	default:
		return false
	}
}

// run serves every viewer with cfg.Clients clients; pick chooses which outcome it records.
// Viewers not started before ctx ends count as given up, with no attempt.
func (l *loader) run(ctx context.Context, log *slog.Logger, viewers []*viewer, pick func(*viewer) *outcome) {
	defer close(l.finished)
	work := make(chan *viewer)
	var wg sync.WaitGroup
	for range l.cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := range work {
				l.inflight.Add(1)
				l.vote(ctx, v, pick(v))
				l.inflight.Add(-1)
				l.answered.Add(1)
			}
		}()
	}
	stopProgress := l.progress(log, len(viewers))
	defer stopProgress()
dispatch:
	for i, v := range viewers {
		for int64(i) >= l.budget.Load() && ctx.Err() == nil {
			sleep(ctx, 2*time.Millisecond)
		}
		l.pace(ctx)
		select {
		case work <- v:
			l.dispatched.Add(1)
		case <-ctx.Done():
			break dispatch
		}
	}
	close(work)
	wg.Wait()
}

// progress logs the load's state every five seconds.
func (l *loader) progress(log *slog.Logger, total int) func() {
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				log.Info("load", "answered", l.answered.Load(), "of", total, "inflight", l.inflight.Load(),
					"200", l.ok.Load(), "409", l.duplicates.Load(), "503", l.unavailable.Load())
			}
		}
	}()
	return func() { close(stop) }
}

// vote sends v's ballot until a definitive answer or the give-up limit, as an app does:
// 200 and 4xx but 429 are final; 429, 5xx, connection errors and timeouts are retried after
// Retry-After, or 250 ms, at most 2 s.
func (l *loader) vote(ctx context.Context, v *viewer, o *outcome) {
	start := time.Now()
	giveUp := start.Add(l.cfg.GiveUp)
	for ctx.Err() == nil {
		a, header, body := l.try(ctx, v)
		o.attempts = append(o.attempts, a)
		switch {
		case a.status == http.StatusOK:
			l.ok.Add(1)
			var res contract.VoteResult
			_ = json.Unmarshal(body, &res) // an unreadable 200 keeps an empty voteId: a lost 200
			o.final, o.status, o.voteID, o.acceptedAt, o.took = true, a.status, res.VoteID, res.AcceptedAt, time.Since(start)
			return
		case a.status >= 400 && a.status < 500 && a.status != http.StatusTooManyRequests:
			if a.status == http.StatusConflict {
				l.duplicates.Add(1)
			}
			var e contract.ErrorResponse
			_ = json.Unmarshal(body, &e)
			o.final, o.status, o.code, o.took = true, a.status, e.Code, time.Since(start)
			return
		}
		if a.status == http.StatusServiceUnavailable {
			l.unavailable.Add(1)
			if header.Get("Retry-After") == "" {
				l.bare503.Add(1)
			}
			l.unavailableMu.Lock()
			if len(l.unavailableAt) < 100_000 {
				l.unavailableAt = append(l.unavailableAt, time.Now())
			}
			l.unavailableMu.Unlock()
		}
		wait := retryAfter(header)
		if time.Now().Add(wait).After(giveUp) {
			return
		}
		sleep(ctx, wait)
	}
}

func (l *loader) try(ctx context.Context, v *viewer) (attempt, http.Header, []byte) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, l.url+"/api/v1/votes", bytes.NewReader(v.body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+v.token)
	start := time.Now()
	resp, err := l.client.Do(req)
	if err != nil {
		return attempt{err: errorKind(err), took: time.Since(start)}, nil, nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		// The status came but the answer broke off: the app cannot trust it and retries.
		return attempt{err: errorKind(err), took: time.Since(start)}, nil, nil
	}
	return attempt{status: resp.StatusCode, took: time.Since(start)}, resp.Header, body
}

func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.EPIPE):
		return "reset"
	}
	return "other"
}

// retryAfter is the wait before the next attempt: the answer's Retry-After, or 250 ms, at most 2 s.
func retryAfter(h http.Header) time.Duration {
	wait := 250 * time.Millisecond
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		wait = time.Duration(s) * time.Second
	}
	return min(wait, 2*time.Second)
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
