package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devidp"
	"github.com/tvvote/voting/devstack/stacktest"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/admin"
	"github.com/tvvote/voting/xds/edgesettings"
	"github.com/tvvote/voting/xds/elections"
	"github.com/tvvote/voting/xds/snapshot"
)

const audience = "https://votes.test/api"

// fixture is the admin API on a real PostgreSQL, with tokens from a development IdP whose
// JWKS the API fetches over HTTP, as it would from Auth0.
type fixture struct {
	url   string
	idp   *devidp.Provider
	pool  *pgxpool.Pool
	admin string // token with the admin permission
	user  string // token without it
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	db := stacktest.Postgres(t)
	pool := db.Pool

	idpSrv := httptest.NewUnstartedServer(nil)
	idpSrv.Start()
	t.Cleanup(idpSrv.Close)
	idp, err := devidp.New(idpSrv.URL+"/", audience)
	if err != nil {
		t.Fatal(err)
	}
	idpSrv.Config.Handler = idp.Handler()

	builder, err := snapshot.NewBuilder(snapshot.Settings{ListenerPort: 8080, ResultsAddr: "127.0.0.1:8082", Filter: edgeconfig.Config{
		JWT:     edgeconfig.JWTConfig{Issuer: idp.Issuer, Audience: audience, JWKSURL: idpSrv.URL + "/.well-known/jwks.json"},
		Redis:   edgeconfig.RedisConfig{Addr: "127.0.0.1:6379"},
		SQS:     edgeconfig.SQSConfig{QueueURL: "http://127.0.0.1:9324/q/votes", Region: "eu-west-1"},
		Limits:  edgeconfig.Limits{PerViewer: edgeconfig.Limit{Max: 10, WindowSeconds: 60}, PerIP: edgeconfig.Limit{Max: 600, WindowSeconds: 60}},
		Captcha: edgeconfig.CaptchaConfig{Mode: "pow", PoW: edgeconfig.PoWConfig{SecretFile: "/run/secrets/pow", Difficulty: 16}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	api := admin.New(elections.NewStore(pool), edgesettings.NewStore(pool), pool, builder,
		auth.NewVerifier(auth.NewJWKS(ctx, idpSrv.URL+"/.well-known/jwks.json", time.Hour), idp.Issuer, audience, auth.DefaultLeeway), log, prometheus.NewRegistry())
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)

	f := &fixture{url: srv.URL, idp: idp, pool: pool}
	if f.admin, err = idp.Mint("admin-"+uuid.NewString(), true, time.Hour); err != nil {
		t.Fatal(err)
	}
	if f.user, err = idp.Mint(uuid.NewString(), false, time.Hour); err != nil {
		t.Fatal(err)
	}
	return f
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (f *fixture) call(t *testing.T, method, path, token string, body any) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, f.url+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

// strict decodes an answer into v, refusing fields the contract does not define.
func strict(t *testing.T, r reply, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content-type %q", ct)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("body %s does not match the contract: %v", r.body, err)
	}
}

func wantError(t *testing.T, r reply, status int, code string) {
	t.Helper()
	var e contract.ErrorResponse
	strict(t, r, status, &e)
	if e.Code != code || e.Message == "" {
		t.Fatalf("error %+v, want %s", e, code)
	}
	if _, err := uuid.Parse(e.TraceID); err != nil {
		t.Fatalf("traceId %q is not a uuid", e.TraceID)
	}
}

// election and candidate are the contract's Election and Candidate, with every property.
type candidate struct {
	ID         string    `json:"id"`
	ElectionID string    `json:"electionId"`
	Name       string    `json:"name"`
	Party      string    `json:"party"`
	PhotoURL   string    `json:"photoUrl"`
	CreatedAt  time.Time `json:"createdAt"`
}

type election struct {
	ID          string      `json:"id"`
	Title       string      `json:"title"`
	Description string      `json:"description"`
	Status      string      `json:"status"`
	StartDate   time.Time   `json:"startDate"`
	EndDate     time.Time   `json:"endDate"`
	Candidates  []candidate `json:"candidates"`
	CreatedAt   time.Time   `json:"createdAt"`
	UpdatedAt   time.Time   `json:"updatedAt"`
}

type electionPage struct {
	Content       []election `json:"content"`
	Page          int        `json:"page"`
	Size          int        `json:"size"`
	TotalElements int        `json:"totalElements"`
	TotalPages    int        `json:"totalPages"`
}

func TestAdminAPIConformsToTheContract(t *testing.T) {
	f := setup(t)
	start := time.Now().UTC().Add(time.Hour).Truncate(time.Second)
	create := map[string]any{"title": "Song of the Night", "description": "Final round",
		"startDate": start, "endDate": start.Add(time.Hour)}

	// Every admin path: 401 without or with a bad token, 403 without the permission.
	e0 := uuid.NewString()
	c0 := uuid.NewString()
	paths := []struct{ method, path string }{
		{"GET", "/api/v1/admin/elections"}, {"POST", "/api/v1/admin/elections"},
		{"PUT", "/api/v1/admin/elections/" + e0}, {"DELETE", "/api/v1/admin/elections/" + e0},
		{"PATCH", "/api/v1/admin/elections/" + e0 + "/status"},
		{"POST", "/api/v1/admin/elections/" + e0 + "/candidates"},
		{"PUT", "/api/v1/admin/elections/" + e0 + "/candidates/" + c0},
		{"DELETE", "/api/v1/admin/elections/" + e0 + "/candidates/" + c0},
		{"GET", "/api/v1/admin/edge-settings"}, {"PUT", "/api/v1/admin/edge-settings/eu"},
		{"GET", "/api/v1/admin/audit"},
	}
	expired, _ := f.idp.Mint("admin-x", true, -time.Hour)
	for _, p := range paths {
		r := f.call(t, p.method, p.path, "", nil)
		wantError(t, r, 401, contract.CodeUnauthorized)
		if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("%s %s: WWW-Authenticate %q", p.method, p.path, r.header.Get("WWW-Authenticate"))
		}
		wantError(t, f.call(t, p.method, p.path, "not.a.token", nil), 401, contract.CodeUnauthorized)
		wantError(t, f.call(t, p.method, p.path, expired, nil), 401, contract.CodeUnauthorized)
		wantError(t, f.call(t, p.method, p.path, f.user, nil), 403, contract.CodeForbidden)
	}
	wantError(t, f.call(t, "GET", "/api/v1/admin/nothing-here", f.admin, nil), 404, contract.CodeNotFound)
	r := f.call(t, "PATCH", "/api/v1/admin/elections", f.admin, nil)
	wantError(t, r, 405, contract.CodeMethodNotAllowed)
	if r.header.Get("Allow") != "GET, POST" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}

	// createElection: 201 Election; 400 on bad input, unknown fields, wrong media type.
	var e election
	strict(t, f.call(t, "POST", "/api/v1/admin/elections", f.admin, create), 201, &e)
	if e.Status != "DRAFT" || e.Title != "Song of the Night" || !e.StartDate.Equal(start) || e.Candidates == nil || e.CreatedAt.IsZero() {
		t.Fatalf("created %+v", e)
	}
	for name, body := range map[string]any{
		"no title":      map[string]any{"description": "", "startDate": start, "endDate": start.Add(time.Hour)},
		"short title":   map[string]any{"title": "ab", "description": "", "startDate": start, "endDate": start.Add(time.Hour)},
		"bad date":      map[string]any{"title": "Bad date", "description": "", "startDate": "tomorrow", "endDate": start},
		"unknown field": map[string]any{"title": "Extra", "description": "", "startDate": start, "endDate": start.Add(time.Hour), "status": "ACTIVE"},
		"not json":      "{",
	} {
		t.Run("create "+name, func(t *testing.T) {
			wantError(t, f.call(t, "POST", "/api/v1/admin/elections", f.admin, body), 400, contract.CodeInvalidRequest)
		})
	}
	req, _ := http.NewRequest("POST", f.url+"/api/v1/admin/elections", strings.NewReader("title=x"))
	req.Header.Set("Authorization", "Bearer "+f.admin)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, reply{resp.StatusCode, resp.Header, b}, 415, contract.CodeUnsupportedMedia)

	// listElections: the page shape, the status filter, bad parameters.
	var page electionPage
	strict(t, f.call(t, "GET", "/api/v1/admin/elections?status=DRAFT&page=0&size=5", f.admin, nil), 200, &page)
	if page.TotalElements != 1 || page.TotalPages != 1 || page.Size != 5 || len(page.Content) != 1 || page.Content[0].ID != e.ID {
		t.Fatalf("page %+v", page)
	}
	strict(t, f.call(t, "GET", "/api/v1/admin/elections", f.admin, nil), 200, &page)
	if page.Size != 20 || page.Page != 0 {
		t.Fatalf("default page %+v", page)
	}
	for _, q := range []string{"?status=OPEN", "?page=-1", "?size=0", "?size=101", "?page=x"} {
		wantError(t, f.call(t, "GET", "/api/v1/admin/elections"+q, f.admin, nil), 400, contract.CodeInvalidRequest)
	}

	base := "/api/v1/admin/elections/" + e.ID
	// updateElection: 200 Election; 400 bad id or input; 404 unknown.
	var upd election
	strict(t, f.call(t, "PUT", base, f.admin, map[string]any{"description": "The final round"}), 200, &upd)
	if upd.Description != "The final round" || upd.Title != e.Title || !upd.UpdatedAt.After(e.UpdatedAt) {
		t.Fatalf("updated %+v", upd)
	}
	wantError(t, f.call(t, "PUT", "/api/v1/admin/elections/not-a-uuid", f.admin, map[string]any{}), 400, contract.CodeInvalidElectionID)
	wantError(t, f.call(t, "PUT", "/api/v1/admin/elections/"+uuid.NewString(), f.admin, map[string]any{}), 404, contract.CodeElectionNotFound)
	wantError(t, f.call(t, "PUT", base, f.admin, map[string]any{"endDate": start.Add(-time.Minute)}), 400, contract.CodeInvalidRequest)

	// addCandidate: 201 Candidate; 400; 404.
	var a, c candidate
	strict(t, f.call(t, "POST", base+"/candidates", f.admin, map[string]any{"name": "Aurora Lights", "party": "Independent",
		"photoUrl": "https://cdn.example/aurora.jpg"}), 201, &a)
	if a.ElectionID != e.ID || a.PhotoURL != "https://cdn.example/aurora.jpg" || a.CreatedAt.IsZero() {
		t.Fatalf("candidate %+v", a)
	}
	strict(t, f.call(t, "POST", base+"/candidates", f.admin, map[string]any{"name": "Blue Harbour", "party": ""}), 201, &c)
	wantError(t, f.call(t, "POST", base+"/candidates", f.admin, map[string]any{"name": "No"}), 400, contract.CodeInvalidRequest)
	wantError(t, f.call(t, "POST", "/api/v1/admin/elections/"+uuid.NewString()+"/candidates", f.admin,
		map[string]any{"name": "Lost Soul", "party": ""}), 404, contract.CodeElectionNotFound)
	// Two candidates and a future window: SCHEDULED.
	strict(t, f.call(t, "GET", "/api/v1/admin/elections?status=SCHEDULED", f.admin, nil), 200, &page)
	if len(page.Content) != 1 || len(page.Content[0].Candidates) != 2 {
		t.Fatalf("scheduled page %+v", page)
	}

	// updateCandidate: 200 Candidate; 404 unknown candidate; 400 bad candidate id.
	var ca candidate
	strict(t, f.call(t, "PUT", base+"/candidates/"+c.ID, f.admin, map[string]any{"party": "Harbour Party"}), 200, &ca)
	if ca.Party != "Harbour Party" || ca.Name != "Blue Harbour" {
		t.Fatalf("updated candidate %+v", ca)
	}
	wantError(t, f.call(t, "PUT", base+"/candidates/"+uuid.NewString(), f.admin, map[string]any{}), 404, contract.CodeNotFound)
	wantError(t, f.call(t, "PUT", base+"/candidates/nope", f.admin, map[string]any{}), 400, contract.CodeInvalidCandidateID)

	// updateElectionStatus: 200 Election; 400 bad status or transition; 404.
	wantError(t, f.call(t, "PATCH", base+"/status", f.admin, map[string]any{"status": "OPEN"}), 400, contract.CodeInvalidRequest)
	wantError(t, f.call(t, "PATCH", base+"/status", f.admin, map[string]any{}), 400, contract.CodeInvalidRequest)
	wantError(t, f.call(t, "PATCH", base+"/status", f.admin, map[string]any{"status": "CLOSED"}), 400, contract.CodeInvalidRequest)
	wantError(t, f.call(t, "PATCH", "/api/v1/admin/elections/"+uuid.NewString()+"/status", f.admin,
		map[string]any{"status": "ACTIVE"}), 404, contract.CodeElectionNotFound)
	var open election
	strict(t, f.call(t, "PATCH", base+"/status", f.admin, map[string]any{"status": "ACTIVE"}), 200, &open)
	if open.Status != "ACTIVE" || time.Since(open.StartDate) > time.Minute || len(open.Candidates) != 2 {
		t.Fatalf("opened %+v", open)
	}

	// Once voting started every edit is refused with 400.
	wantError(t, f.call(t, "PUT", base, f.admin, map[string]any{"title": "Too late"}), 400, contract.CodeInvalidRequest)
	wantError(t, f.call(t, "POST", base+"/candidates", f.admin, map[string]any{"name": "Late Entry", "party": ""}), 400, contract.CodeInvalidRequest)
	wantError(t, f.call(t, "PUT", base+"/candidates/"+a.ID, f.admin, map[string]any{"name": "Renamed"}), 400, contract.CodeInvalidRequest)
	wantError(t, f.call(t, "DELETE", base+"/candidates/"+a.ID, f.admin, nil), 400, contract.CodeInvalidRequest)

	var closed election
	strict(t, f.call(t, "PATCH", base+"/status", f.admin, map[string]any{"status": "CLOSED"}), 200, &closed)
	if closed.Status != "CLOSED" || time.Since(closed.EndDate) > time.Minute {
		t.Fatalf("closed %+v", closed)
	}
	wantError(t, f.call(t, "PATCH", base+"/status", f.admin, map[string]any{"status": "ACTIVE"}), 400, contract.CodeInvalidRequest)

	// deleteCandidate: 204 (on an election that has not started); 404.
	var other election
	strict(t, f.call(t, "POST", "/api/v1/admin/elections", f.admin, create), 201, &other)
	var oc candidate
	strict(t, f.call(t, "POST", "/api/v1/admin/elections/"+other.ID+"/candidates", f.admin, map[string]any{"name": "Short Lived", "party": ""}), 201, &oc)
	r = f.call(t, "DELETE", "/api/v1/admin/elections/"+other.ID+"/candidates/"+oc.ID, f.admin, nil)
	if r.status != 204 || len(r.body) != 0 {
		t.Fatalf("delete candidate: %d %s", r.status, r.body)
	}
	wantError(t, f.call(t, "DELETE", "/api/v1/admin/elections/"+other.ID+"/candidates/"+oc.ID, f.admin, nil), 404, contract.CodeNotFound)

	// deleteElection: 204, soft (the election stays, CANCELLED); 404 unknown.
	if r := f.call(t, "DELETE", "/api/v1/admin/elections/"+other.ID, f.admin, nil); r.status != 204 {
		t.Fatalf("delete election: %d %s", r.status, r.body)
	}
	strict(t, f.call(t, "GET", "/api/v1/admin/elections?status=CANCELLED", f.admin, nil), 200, &page)
	if len(page.Content) != 1 || page.Content[0].ID != other.ID {
		t.Fatalf("cancelled page %+v", page)
	}
	wantError(t, f.call(t, "DELETE", "/api/v1/admin/elections/"+uuid.NewString(), f.admin, nil), 404, contract.CodeElectionNotFound)

	// The request's x-request-id is the traceId of an error.
	req, _ = http.NewRequest("DELETE", f.url+"/api/v1/admin/elections/"+uuid.NewString(), nil)
	req.Header.Set("Authorization", "Bearer "+f.admin)
	trace := uuid.NewString()
	req.Header.Set("x-request-id", trace)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var er contract.ErrorResponse
	_ = json.NewDecoder(resp.Body).Decode(&er)
	resp.Body.Close()
	if er.TraceID != trace {
		t.Fatalf("traceId %q, want %q", er.TraceID, trace)
	}

	// Every change above is in the audit trail, with who and the trace id.
	var trail struct {
		Entries []struct {
			Actor  string          `json:"actor"`
			Action string          `json:"action"`
			After  json.RawMessage `json:"after"`
		} `json:"entries"`
	}
	if r := f.call(t, "GET", "/api/v1/admin/audit?electionId="+e.ID, f.admin, nil); r.status != 200 || json.Unmarshal(r.body, &trail) != nil {
		t.Fatalf("audit: %d %s", r.status, r.body)
	}
	var actions []string
	for _, en := range trail.Entries {
		actions = append(actions, en.Action)
	}
	want := "election.close election.open candidate.update election.schedule candidate.create candidate.create election.update election.create"
	if strings.Join(actions, " ") != want {
		t.Fatalf("audit actions %v", actions)
	}
}

func TestEdgeSettingsAPI(t *testing.T) {
	f := setup(t)
	type view struct {
		Scope     string                 `json:"scope"`
		Override  map[string]any         `json:"override"`
		Effective edgesettings.Effective `json:"effective"`
	}
	var all struct {
		Defaults edgesettings.Effective `json:"defaults"`
		Global   view                   `json:"global"`
		Regions  []view                 `json:"regions"`
	}
	strict(t, f.call(t, "GET", "/api/v1/admin/edge-settings", f.admin, nil), 200, &all)
	if all.Defaults.PerViewer.Max != 10 || all.Global.Override != nil || all.Global.Effective != all.Defaults || len(all.Regions) != 0 {
		t.Fatalf("initial settings %+v", all)
	}
	var v view
	strict(t, f.call(t, "PUT", "/api/v1/admin/edge-settings", f.admin, map[string]any{"perViewer": map[string]int{"max": 1, "windowSeconds": 60}}), 200, &v)
	if v.Scope != "*" || v.Effective.PerViewer.Max != 1 || v.Effective.CaptchaMode != "pow" {
		t.Fatalf("global put %+v", v)
	}
	strict(t, f.call(t, "PUT", "/api/v1/admin/edge-settings/eu-west-1", f.admin, map[string]any{"captchaMode": "off"}), 200, &v)
	if v.Scope != "eu-west-1" || v.Effective.PerViewer.Max != 1 || v.Effective.CaptchaMode != "off" || v.Override["updatedBy"] == "" {
		t.Fatalf("region put %+v", v)
	}
	strict(t, f.call(t, "GET", "/api/v1/admin/edge-settings/us-east-1", f.admin, nil), 200, &v)
	if v.Override != nil || v.Effective.PerViewer.Max != 1 || v.Effective.CaptchaMode != "pow" {
		t.Fatalf("region without override %+v", v)
	}
	strict(t, f.call(t, "PUT", "/api/v1/admin/edge-settings/us-east-1", f.admin, map[string]any{"trustedHops": 1, "proxyProtocol": true}), 200, &v)
	if v.Effective.TrustedHops != 1 || !v.Effective.ProxyProtocol || v.Override["trustedHops"] != 1.0 || v.Effective.PerViewer.Max != 1 {
		t.Fatalf("client address put %+v", v)
	}
	for name, body := range map[string]any{
		"siteverify without a service": map[string]any{"captchaMode": "siteverify"},
		"unknown mode":                 map[string]any{"captchaMode": "maybe"},
		"negative limit":               map[string]any{"perIp": map[string]int{"max": -1, "windowSeconds": 1}},
		"too many trusted hops":        map[string]any{"trustedHops": 6},
		"unknown field":                map[string]any{"perUser": map[string]int{"max": 1, "windowSeconds": 1}},
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, f.call(t, "PUT", "/api/v1/admin/edge-settings/eu-west-1", f.admin, body), 400, contract.CodeInvalidRequest)
		})
	}
	wantError(t, f.call(t, "PUT", "/api/v1/admin/edge-settings/bad%20region", f.admin, map[string]any{}), 400, contract.CodeInvalidRequest)
	if r := f.call(t, "DELETE", "/api/v1/admin/edge-settings/eu-west-1", f.admin, nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	wantError(t, f.call(t, "DELETE", "/api/v1/admin/edge-settings/eu-west-1", f.admin, nil), 404, contract.CodeNotFound)
	r := f.call(t, "DELETE", "/api/v1/admin/edge-settings", f.admin, nil)
	wantError(t, r, 405, contract.CodeMethodNotAllowed)
	if r.header.Get("Allow") != "GET, PUT" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}
}
