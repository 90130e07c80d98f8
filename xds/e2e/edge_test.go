package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
)

// clientEdge starts an Envoy in a region of its own, so its client address settings and its
// per-IP limit of 1 touch no other test, and returns it with the scope path of its region.
func clientEdge(t *testing.T) (*devstack.Edge, string) {
	t.Helper()
	region := fmt.Sprintf("client-%d", rand.IntN(1_000_000))
	edge, err := stack.StartEdge(context.Background(), devstack.EdgeOptions{Region: region})
	if err != nil {
		t.Fatal(err)
	}
	path := "/api/v1/admin/edge-settings/" + region
	tok := adminToken(t)
	t.Cleanup(func() {
		api(t, north, tok, "DELETE", path, nil)
		edge.Stop()
	})
	return edge, path
}

// voteFrom votes as a fresh viewer at edge, with the X-Forwarded-For header xff unless empty,
// on a new connection (a listener change drains kept ones).
func voteFrom(t *testing.T, edge *devstack.Edge, e election, xff string) reply {
	t.Helper()
	b, _ := json.Marshal(contract.VoteRequest{ElectionID: e.ID, CandidateID: e.Candidates[0].ID,
		CaptchaToken: "e2e-dummy-captcha-token-0123456789"})
	req, _ := http.NewRequest(http.MethodPost, edge.URL()+"/api/v1/votes", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token(t, uuid.NewString(), false))
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	return do(t, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}, req)
}

// listenerDump is the edge's public listener as Envoy runs it.
func listenerDump(t *testing.T, edge *devstack.Edge) string {
	t.Helper()
	resp, err := http.Get(edge.AdminURL() + "/config_dump?resource=dynamic_listeners")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// settle waits until edge runs with the wanted per-IP limit, trusted hops and PROXY protocol,
// with no listener left draining.
func settle(t *testing.T, edge *devstack.Edge, perIPMax float64, hops int, proxyProtocol bool) {
	t.Helper()
	until(t, 5*time.Second, "settings at "+edge.Region, func() error {
		limits, _ := dump(t, edge).config["limits"].(map[string]any)
		if ip, _ := limits["perIp"].(map[string]any); ip["max"] != perIPMax {
			return fmt.Errorf("limits %v", limits)
		}
		if hops == 0 && !proxyProtocol {
			return nil // the listener every edge starts with
		}
		l := listenerDump(t, edge)
		if !strings.Contains(l, fmt.Sprintf(`"xff_num_trusted_hops": %d`, hops)) && hops != 0 ||
			strings.Contains(l, "draining_state") || proxyProtocol != strings.Contains(l, "envoy.filters.listener.proxy_protocol") {
			return fmt.Errorf("listener not there yet")
		}
		return nil
	})
}

// forgetIP clears the per-IP window of addr, which an earlier test may have filled.
func forgetIP(t *testing.T, addr string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: stack.Redis.Addr})
	defer rdb.Close()
	if err := rdb.Del(context.Background(), "rl:ip:{"+addr+"}").Err(); err != nil {
		t.Fatal(err)
	}
}

func testNet(prefix string) string { return fmt.Sprintf("%s.%d", prefix, 1+rand.IntN(254)) }

// A client cannot choose the address its per-IP limit counts: with a limit of 1 per minute, a
// second vote from the same peer is refused whatever X-Forwarded-For it claims.
func TestSpoofedForwardedForBuysNoVotes(t *testing.T) {
	tok := adminToken(t)
	e := openElection(t, tok)
	edge, path := clientEdge(t)
	want(t, api(t, north, tok, "PUT", path, map[string]any{"perIp": map[string]int{"max": 1, "windowSeconds": 60}}), 200, nil)
	settle(t, edge, 1, 0, false)
	forgetIP(t, "127.0.0.1")

	if r := voteFrom(t, edge, e, testNet("198.51.100")); r.status != http.StatusOK {
		t.Fatalf("first vote from the peer: %d %s", r.status, r.body)
	}
	for _, xff := range []string{testNet("198.51.100"), testNet("203.0.113") + ", " + testNet("192.0.2"), ""} {
		r := voteFrom(t, edge, e, xff)
		wantError(t, r, http.StatusTooManyRequests, contract.CodeRateLimited)
	}
}

// With trusted hops set for a region (an ALB appends the client's address), the per-IP limit
// counts the entry that many from the right: votes with different last entries from one peer
// are limited apart, and entries a client puts before them change nothing.
func TestTrustedHopsPickTheForwardedEntry(t *testing.T) {
	tok := adminToken(t)
	e := openElection(t, tok)
	edge, path := clientEdge(t)
	r := api(t, north, tok, "PUT", path, map[string]any{"perIp": map[string]int{"max": 1, "windowSeconds": 60}, "trustedHops": 9})
	wantError(t, r, http.StatusBadRequest, contract.CodeInvalidRequest)

	var view struct {
		Override  map[string]any `json:"override"`
		Effective struct {
			TrustedHops int `json:"trustedHops"`
		} `json:"effective"`
	}
	want(t, api(t, north, tok, "PUT", path, map[string]any{"perIp": map[string]int{"max": 1, "windowSeconds": 60}, "trustedHops": 1}), 200, &view)
	if view.Effective.TrustedHops != 1 || view.Override["trustedHops"] != 1.0 {
		t.Fatalf("view %+v", view)
	}
	settle(t, edge, 1, 1, false)

	alb1, alb2 := testNet("203.0.113"), testNet("198.51.100")
	client := testNet("192.0.2")
	for _, addr := range []string{alb1, alb2, client} {
		forgetIP(t, addr)
	}
	if r := voteFrom(t, edge, e, alb1); r.status != http.StatusOK {
		t.Fatalf("first client: %d %s", r.status, r.body)
	}
	if r := voteFrom(t, edge, e, "192.0.2.1, "+alb2); r.status != http.StatusOK {
		t.Fatalf("second client, same peer: %d %s", r.status, r.body)
	}
	wantError(t, voteFrom(t, edge, e, alb1), http.StatusTooManyRequests, contract.CodeRateLimited)
	wantError(t, voteFrom(t, edge, e, "192.0.2.99, "+alb1), http.StatusTooManyRequests, contract.CodeRateLimited)

	// Two trusted hops: the client is the second entry from the right.
	want(t, api(t, north, tok, "PUT", path, map[string]any{"perIp": map[string]int{"max": 1, "windowSeconds": 60}, "trustedHops": 2}), 200, nil)
	settle(t, edge, 1, 2, false)
	if r := voteFrom(t, edge, e, client+", 10.0.0.1"); r.status != http.StatusOK {
		t.Fatalf("client behind two hops: %d %s", r.status, r.body)
	}
	wantError(t, voteFrom(t, edge, e, client+", 10.0.0.2"), http.StatusTooManyRequests, contract.CodeRateLimited)

	// The change is audited like every edge setting.
	var audit struct {
		Entries []struct {
			Action string          `json:"action"`
			After  json.RawMessage `json:"after"`
		} `json:"entries"`
	}
	want(t, api(t, north, tok, "GET", "/api/v1/admin/audit?limit=20", nil), 200, &audit)
	found := false
	for _, a := range audit.Entries {
		found = found || a.Action == "edge_settings.put" && strings.Contains(string(a.After), `"scope":"`+edge.Region+`"`) &&
			strings.Contains(string(a.After), `"trustedHops":2`)
	}
	if !found {
		t.Fatalf("no audit entry for trustedHops 2 at %s", edge.Region)
	}
}

// rawVote sends a vote over a new connection to edge, after prefix (a PROXY protocol header),
// and returns the status line, or the error if the connection ends without an answer.
func rawVote(t *testing.T, edge *devstack.Edge, e election, prefix string) (string, error) {
	t.Helper()
	b, _ := json.Marshal(contract.VoteRequest{ElectionID: e.ID, CandidateID: e.Candidates[0].ID,
		CaptchaToken: "e2e-dummy-captcha-token-0123456789"})
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", edge.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "%sPOST /api/v1/votes HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\n"+
		"Content-Length: %d\r\nConnection: close\r\n\r\n%s", prefix, token(t, uuid.NewString(), false), len(b), b)
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// Behind a network load balancer that speaks the PROXY protocol, the client address is the one
// the header names, and a connection without the header is refused.
func TestProxyProtocolGivesTheClientAddress(t *testing.T) {
	tok := adminToken(t)
	e := openElection(t, tok)
	edge, path := clientEdge(t)
	want(t, api(t, north, tok, "PUT", path, map[string]any{"perIp": map[string]int{"max": 1, "windowSeconds": 60},
		"proxyProtocol": true}), 200, nil)
	settle(t, edge, 1, 0, true)

	header := func(src string) string {
		return fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 40000 %d\r\n", src, edge.Port)
	}
	a, b := testNet("203.0.113"), testNet("198.51.100")
	forgetIP(t, a)
	forgetIP(t, b)
	for _, src := range []string{a, b} {
		if line, err := rawVote(t, edge, e, header(src)); line != "HTTP/1.1 200 OK" {
			t.Fatalf("vote from %s: %q %v", src, line, err)
		}
	}
	if line, err := rawVote(t, edge, e, header(a)); line != "HTTP/1.1 429 Too Many Requests" {
		t.Fatalf("second vote from %s: %q %v", a, line, err)
	}
	if line, err := rawVote(t, edge, e, ""); line != "" || err == nil {
		t.Fatalf("a connection without the PROXY header was answered: %q", line)
	}
}

// rawRequest sends req as is and returns the answer.
func rawRequest(t *testing.T, edge *devstack.Edge, req string) reply {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", edge.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() { _, _ = io.WriteString(c, req) }() // Envoy may answer before it read everything
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

// wantJSONError is wantError that also needs the JSON content type.
func wantJSONError(t *testing.T, r reply, status int, code string) contract.ErrorResponse {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content-type %q: %d %s", ct, r.status, r.body)
	}
	return wantError(t, r, status, code)
}

// What Envoy answers itself is the contract's ErrorResponse too, with the request's x-request-id
// as traceId; the vote filter's own answers keep their bodies.
func TestEnvoysOwnErrorsAreTheContractsErrors(t *testing.T) {
	rid := uuid.NewString()
	// An unknown method: Envoy's codec refuses it before any x-request-id exists.
	wantJSONError(t, rawRequest(t, north, "QUERY /api/v1/votes HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n"),
		http.StatusBadRequest, contract.CodeInvalidRequest)
	// Headers over Envoy's limit (it would say 431).
	big := "GET /api/v1/results/live/" + uuid.NewString() + " HTTP/1.1\r\nHost: edge\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n"
	e := wantJSONError(t, rawRequest(t, north, big), http.StatusBadRequest, contract.CodeInvalidRequest)
	if !strings.Contains(e.Message, "headers_too_large") {
		t.Errorf("message %q does not say why", e.Message)
	}
	// A body over Envoy's buffer while the edge holds an admin request for its token check.
	body := strings.Repeat("x", 5<<20)
	tooLarge := fmt.Sprintf("POST /api/v1/admin/elections HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nx-request-id: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		adminToken(t), rid, len(body), body)
	if e := wantJSONError(t, rawRequest(t, north, tooLarge), http.StatusRequestEntityTooLarge, contract.CodePayloadTooLarge); e.TraceID != rid {
		t.Errorf("traceId %s, want the request's %s", e.TraceID, rid)
	}

	// The vote filter's replies are its own: its message, its headers.
	voteTooLarge := fmt.Sprintf("POST /api/v1/votes HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"+
		"x-request-id: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", rid, len(body), body)
	r := rawRequest(t, north, voteTooLarge)
	if e := wantJSONError(t, r, http.StatusRequestEntityTooLarge, contract.CodePayloadTooLarge); e.Message != "vote body too large" ||
		e.TraceID != rid || r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("vote filter's 413 rewritten: %v %s", r.header, r.body)
	}
	r = rawRequest(t, north, "GET /api/v1/votes HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
	if e := wantJSONError(t, r, http.StatusMethodNotAllowed, contract.CodeMethodNotAllowed); e.Message != "only POST is allowed here" ||
		r.header.Get("Allow") != "POST" {
		t.Errorf("vote filter's 405 rewritten: %v %s", r.header, r.body)
	}

	// So are the routes' direct responses.
	r = rawRequest(t, north, "GET /api/v1/votes/nothing-here HTTP/1.1\r\nHost: edge\r\nx-request-id: "+rid+"\r\nConnection: close\r\n\r\n")
	if e := wantJSONError(t, r, http.StatusNotFound, contract.CodeNotFound); e.Message != "no such vote endpoint" || e.TraceID != rid {
		t.Errorf("route's 404 rewritten: %s", r.body)
	}

	live := func() reply {
		req, _ := http.NewRequest(http.MethodGet, north.URL()+"/api/v1/results/live/"+uuid.NewString(), nil)
		req.Header.Set("x-request-id", rid)
		return do(t, &http.Client{Timeout: 20 * time.Second}, req)
	}
	// The results worker hung: the route times out (XDS_UPSTREAM_TIMEOUT of this stack).
	if err := stack.Freeze(devstack.ComponentResults); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r = live()
	took := time.Since(start)
	if err := stack.Thaw(devstack.ComponentResults); err != nil {
		t.Fatal(err)
	}
	if e := wantJSONError(t, r, http.StatusServiceUnavailable, contract.CodeUnavailable); e.TraceID != rid || r.header.Get("Retry-After") == "" {
		t.Errorf("timeout: %v %s", r.header, r.body)
	}
	if took < upstreamTimeout-100*time.Millisecond || took > upstreamTimeout+5*time.Second {
		t.Errorf("answered after %v, the route timeout is %v", took, upstreamTimeout)
	}
	// The results worker down: no healthy upstream.
	if err := stack.Kill(devstack.ComponentResults); err != nil {
		t.Fatal(err)
	}
	r = live()
	if err := stack.Restart(context.Background(), devstack.ComponentResults); err != nil {
		t.Fatal(err)
	}
	if e := wantJSONError(t, r, http.StatusServiceUnavailable, contract.CodeUnavailable); e.TraceID != rid || r.header.Get("Retry-After") == "" {
		t.Errorf("results down: %v %s", r.header, r.body)
	}
}
