// Package e2e drives the control plane end to end: the whole stack (PostgreSQL, Redis,
// ElasticMQ, devidp, processor, results worker, the control plane binary) with two real Envoys
// carrying the real libvotefilter.so, labelled as two regions and attached to one control
// plane. Admin calls go through Envoy, as operators' do.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
)

// upstreamTimeout is how long the edges wait for the results worker and the admin API.
const upstreamTimeout = 3 * time.Second

var (
	stack *devstack.Stack
	north *devstack.Edge // the stack's own Envoy
	south *devstack.Edge // a second Envoy, another region, same control plane
	edges []*devstack.Edge
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	s, err := devstack.Start(ctx, devstack.Options{
		Region: "eu-north",
		// XDS_E2E_BIN_DIR runs the tests against binaries built elsewhere (default bin/).
		BinDir: os.Getenv("XDS_E2E_BIN_DIR"),
		// The captcha is not what is tested here; a 20+ character dummy token passes "off".
		CaptchaMode: "off",
		// Every vote of the tests comes from 127.0.0.1: the per-IP limit must not get in the way.
		// A short upstream timeout lets a test see a hung results worker answered.
		ControlPlaneEnv: []string{"XDS_RATE_PER_IP=1000000/60s", "XDS_RATE_PER_VIEWER=100/60s",
			"XDS_UPSTREAM_TIMEOUT=" + upstreamTimeout.String()},
	})
	if err != nil {
		cancel()
		fmt.Fprintln(os.Stderr, "stack:", err)
		os.Exit(1)
	}
	stack = s
	north = s.PrimaryEdge()
	south, err = s.StartEdge(ctx, devstack.EdgeOptions{Region: "eu-south"})
	cancel()
	if err != nil {
		s.Stop()
		fmt.Fprintln(os.Stderr, "second edge:", err)
		os.Exit(1)
	}
	edges = []*devstack.Edge{north, south}
	code := m.Run()
	south.Stop()
	s.Stop()
	os.Exit(code)
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, client *http.Client, req *http.Request) reply {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

func token(t *testing.T, sub string, admin bool) string {
	t.Helper()
	tok, err := stack.Token(context.Background(), sub, admin)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// adminDirect makes api() call the control plane's admin address instead of going through an
// Envoy. XDS_E2E_ADMIN_VIA_ENVOY=1 sends every call through the edges, as production does;
// TestAdminAPIThroughEnvoy always does.
var adminDirect = os.Getenv("XDS_E2E_ADMIN_VIA_ENVOY") != "1"

// api calls the admin API through edge with token.
func api(t *testing.T, edge *devstack.Edge, tok, method, path string, body any) reply {
	t.Helper()
	base := edge.URL()
	if adminDirect {
		base = stack.ControlPlaneAdminURL()
	}
	return apiAt(t, base, tok, method, path, body)
}

func apiAt(t *testing.T, base, tok, method, path string, body any) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return do(t, nil, req)
}

func adminToken(t *testing.T) string { return token(t, "admin-"+t.Name(), true) }

// want decodes a successful answer into v.
func want(t *testing.T, r reply, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			t.Fatalf("body %s: %v", r.body, err)
		}
	}
}

func wantError(t *testing.T, r reply, status int, code string) contract.ErrorResponse {
	t.Helper()
	var e contract.ErrorResponse
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("status %d, body %q is not an ErrorResponse: %v", r.status, r.body, err)
	}
	if r.status != status || e.Code != code || e.Message == "" {
		t.Fatalf("got %d %+v, want %d %s", r.status, e, status, code)
	}
	if _, err := uuid.Parse(e.TraceID); err != nil {
		t.Fatalf("traceId %q is not a uuid", e.TraceID)
	}
	return e
}

type candidate struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type election struct {
	ID         string      `json:"id"`
	Status     string      `json:"status"`
	StartDate  time.Time   `json:"startDate"`
	EndDate    time.Time   `json:"endDate"`
	Candidates []candidate `json:"candidates"`
}

// newElection creates an election with two candidates through the admin API; with start in
// the future it is SCHEDULED.
func newElection(t *testing.T, tok string, start, end time.Time) election {
	t.Helper()
	var e election
	want(t, api(t, north, tok, "POST", "/api/v1/admin/elections", map[string]any{
		"title": "E2E " + t.Name(), "description": "control plane e2e", "startDate": start, "endDate": end}), 201, &e)
	for _, name := range []string{"Aurora Lights", "Blue Harbour"} {
		var c candidate
		want(t, api(t, south, tok, "POST", "/api/v1/admin/elections/"+e.ID+"/candidates",
			map[string]any{"name": name, "party": "Independent"}), 201, &c)
		e.Candidates = append(e.Candidates, c)
	}
	return e
}

// openElection creates an election and opens it by hand.
func openElection(t *testing.T, tok string) election {
	t.Helper()
	now := time.Now().UTC()
	e := newElection(t, tok, now.Add(time.Hour), now.Add(3*time.Hour))
	var opened election
	want(t, api(t, north, tok, "PATCH", "/api/v1/admin/elections/"+e.ID+"/status", map[string]any{"status": "ACTIVE"}), 200, &opened)
	if opened.Status != "ACTIVE" {
		t.Fatalf("opened %+v", opened)
	}
	opened.Candidates = e.Candidates
	return opened
}

func vote(t *testing.T, client *http.Client, edge *devstack.Edge, viewer string, e election) reply {
	t.Helper()
	b, _ := json.Marshal(contract.VoteRequest{ElectionID: e.ID, CandidateID: e.Candidates[0].ID,
		CaptchaToken: "e2e-dummy-captcha-token-0123456789"})
	req, _ := http.NewRequest(http.MethodPost, edge.URL()+"/api/v1/votes", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token(t, viewer, false))
	return do(t, client, req)
}

// until retries check every 10 ms until it succeeds or timeout passes, and returns how long
// it took.
func until(t *testing.T, timeout time.Duration, what string, check func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := check()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// filterState is what one edge's vote filter runs with, from Envoy's config_dump.
type filterState struct {
	ecdsVersion     string
	listenerVersion string
	config          map[string]any
}

func dump(t *testing.T, edge *devstack.Edge) filterState {
	t.Helper()
	var fs filterState
	var ecds struct {
		Configs []struct {
			VersionInfo string `json:"version_info"`
			EcdsFilter  struct {
				Name        string `json:"name"`
				TypedConfig struct {
					FilterConfig struct {
						Value string `json:"value"`
					} `json:"filter_config"`
				} `json:"typed_config"`
			} `json:"ecds_filter"`
		} `json:"configs"`
	}
	getJSON(t, edge.AdminURL()+"/config_dump?resource=ecds_filters", &ecds)
	for _, c := range ecds.Configs {
		if c.EcdsFilter.Name == "votefilter" {
			fs.ecdsVersion = c.VersionInfo
			if err := json.Unmarshal([]byte(c.EcdsFilter.TypedConfig.FilterConfig.Value), &fs.config); err != nil {
				t.Fatalf("filter config: %v", err)
			}
		}
	}
	var lds struct {
		Configs []struct {
			Name        string `json:"name"`
			ActiveState struct {
				VersionInfo string `json:"version_info"`
			} `json:"active_state"`
		} `json:"configs"`
	}
	getJSON(t, edge.AdminURL()+"/config_dump?resource=dynamic_listeners", &lds)
	for _, l := range lds.Configs {
		if l.Name == "public" {
			fs.listenerVersion = l.ActiveState.VersionInfo
		}
	}
	return fs
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

// electionAtEdge is the election as the edge's filter knows it, or nil.
func (fs filterState) election(id string) map[string]any {
	list, _ := fs.config["elections"].([]any)
	for _, x := range list {
		if e, _ := x.(map[string]any); e["id"] == id {
			return e
		}
	}
	return nil
}

func version(v string) int64 {
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// metric reads one sample from the control plane's /metrics; labels is a regexp fragment.
func metric(t *testing.T, name, labels string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(stack.ControlPlaneMetricsURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{?` + labels + `[^\n]*\}? ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(string(b))
	if m == nil {
		return 0, false
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v, true
}
