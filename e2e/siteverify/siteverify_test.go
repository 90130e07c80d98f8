// Package siteverify drives the third-party captcha mode through the real Envoy: the vote
// filter asks a siteverify-compatible service (reCAPTCHA / Turnstile / hCaptcha protocol) with
// Envoy's own HTTP client, through the captcha_siteverify cluster the control plane pushes.
// The service here is a local stand-in that answers like the real ones.
package siteverify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/contract/openapi"
	"github.com/tvvote/voting/devstack"
)

const secret = "site-secret-for-tests"

// provider answers siteverify calls: tokens starting with "good-" pass, "down-" gets a 500,
// anything else is refused; it records every form it received.
type provider struct {
	mu    sync.Mutex
	forms []url.Values
}

func (p *provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(b))
	p.mu.Lock()
	p.forms = append(p.forms, form)
	p.mu.Unlock()
	if r.URL.Path != "/siteverify" || r.Method != http.MethodPost || form.Get("secret") != secret {
		http.Error(w, `{"success":false,"error-codes":["invalid-input-secret"]}`, http.StatusBadRequest)
		return
	}
	tok := form.Get("response")
	switch {
	case strings.HasPrefix(tok, "down-"):
		http.Error(w, "provider outage", http.StatusInternalServerError)
	case strings.HasPrefix(tok, "good-"):
		w.Write([]byte(`{"success":true,"hostname":"votes.local"}`))
	default:
		w.Write([]byte(`{"success":false,"error-codes":["invalid-input-response"]}`))
	}
}

var (
	stack    *devstack.Stack
	election devstack.Election
	prov     = &provider{}
)

func TestMain(m *testing.M) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go http.Serve(l, prov)
	// The edges read the site secret from a file; the control plane passes only its path.
	secretFile, err := devstack.SecretFile(fmt.Sprintf("siteverify-%d", l.Addr().(*net.TCPAddr).Port), secret)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	s, err := devstack.Start(ctx, devstack.Options{Region: "sv-region", CaptchaMode: "siteverify",
		ControlPlaneEnv: []string{"XDS_SITEVERIFY_ADDR=" + l.Addr().String(), "XDS_SITEVERIFY_HOST=captcha.test",
			"XDS_SITEVERIFY_PATH=/siteverify", "XDS_SITEVERIFY_SECRET_FILE=" + secretFile}})
	if err == nil {
		election, err = s.SeedElection(ctx, "Siteverify election", time.Hour, "Alice Example", "Bob Example")
		if err == nil {
			err = s.WaitEnvoyKnows(ctx, election.ID)
		}
	}
	cancel()
	if err != nil {
		if s != nil {
			s.Stop()
		}
		fmt.Fprintln(os.Stderr, "stack:", err)
		os.Exit(1)
	}
	stack = s
	code := m.Run()
	s.Stop()
	os.Remove(secretFile)
	os.Exit(code)
}

func vote(t *testing.T, captcha string) (int, http.Header, []byte) {
	t.Helper()
	tok, err := stack.Token(context.Background(), uuid.NewString(), false)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(contract.VoteRequest{ElectionID: election.ID, CandidateID: election.Candidates[0].ID, CaptchaToken: captcha})
	req, _ := http.NewRequest(http.MethodPost, stack.EnvoyURL()+"/api/v1/votes", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	contracts, err := openapi.Shared()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := contracts.Client(t).Do(req) // the answer must conform to the contracts
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func errorCode(t *testing.T, b []byte) string {
	t.Helper()
	var e contract.ErrorResponse
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not an ErrorResponse: %s", b)
	}
	return e.Code
}

func TestPassingTokenIsAdmittedAndTheProviderSawTheSecret(t *testing.T) {
	status, _, b := vote(t, "good-0123456789abcdefghij")
	if status != http.StatusOK {
		t.Fatalf("vote with a passing captcha: %d %s", status, b)
	}
	prov.mu.Lock()
	defer prov.mu.Unlock()
	last := prov.forms[len(prov.forms)-1]
	if last.Get("secret") != secret || last.Get("response") != "good-0123456789abcdefghij" || last.Get("remoteip") == "" {
		t.Fatalf("siteverify form = %v", last)
	}
}

func TestRefusedTokenIs403(t *testing.T) {
	status, _, b := vote(t, "bot-0123456789abcdefghij")
	if status != http.StatusForbidden || errorCode(t, b) != contract.CodeCaptchaFailed {
		t.Fatalf("refused captcha: %d %s", status, b)
	}
}

func TestProviderOutageIs503WithRetryAfter(t *testing.T) {
	status, h, b := vote(t, "down-0123456789abcdefghij")
	if status != http.StatusServiceUnavailable || errorCode(t, b) != contract.CodeUnavailable || h.Get("Retry-After") == "" {
		t.Fatalf("provider outage: %d %v %s", status, h, b)
	}
}
