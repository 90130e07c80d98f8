package openapi

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/tvvote/voting/contract"
)

func TestProjectDocumentsAreValid(t *testing.T) {
	if err := validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadFailsClearlyWithoutTheSharedContracts(t *testing.T) {
	_, err := LoadFrom(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "vote-service.yaml") {
		t.Fatalf("LoadFrom(empty dir) = %v", err)
	}
}

func TestCheck(t *testing.T) {
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	const (
		election  = "550e8400-e29b-41d4-a716-446655440000"
		candidate = "660e8400-e29b-41d4-a716-446655440000"
		trace     = "a1b2c3d4-e5f6-4890-abcd-ef1234567890"
	)
	results := func(status string) string {
		return `{"electionId":"` + election + `","electionTitle":"Final","status":"` + status + `","totals":[{"candidateId":"` +
			candidate + `","name":"Jane Doe","votes":3,"percentage":100}],"totalVotes":3,"generatedAt":"2026-11-01T20:15:00Z"}`
	}
	stats := func(region string) string {
		return `{"electionId":"` + election + `","totalVotes":3,"totalEligibleVoters":0,"turnoutPercentage":0,"candidateStats":[],` +
			`"regionalBreakdown":[` + region + `],"averageVotingTime":45.3,"generatedAt":"2026-11-01T20:15:00Z"}`
	}
	errBody := func(code string) string { return `{"code":"` + code + `","message":"m","traceId":"` + trace + `"}` }
	cases := []struct {
		name, method, path string
		status             int
		body               string
		violation          string // "" when the answer conforms
	}{
		{"results of an open election", "GET", "/api/v1/results/" + election, 200, results("ACTIVE"), ""},
		{"results of a scheduled election", "GET", "/api/v1/results/" + election, 200, results("SCHEDULED"), "status"},
		{"results of a cancelled election", "GET", "/api/v1/results/" + election, 200, results("CANCELLED"), "status"},
		{"scheduled election refused", "GET", "/api/v1/results/" + election, 409, errBody("ELECTION_NOT_OPEN"), ""},
		{"a status no document has", "GET", "/api/v1/results/" + election, 418, errBody("ELECTION_NOT_OPEN"), "status is not supported"},
		{"a field the contract does not have", "GET", "/api/v1/results/live/" + election, 200,
			`{"electionId":"` + election + `","currentVotes":1,"lastUpdated":"2026-11-01T20:15:00Z","extra":1}`, "extra"},
		{"an error code the results never send", "GET", "/api/v1/results/live/" + election, 404, errBody("DUPLICATE_VOTE"), "code"},
		{"traceId that is no uuid", "GET", "/api/v1/results/live/" + election, 404,
			`{"code":"ELECTION_NOT_FOUND","message":"m","traceId":"abc"}`, "traceId"},
		{"regional breakdown by candidate", "GET", "/api/v1/results/statistics/" + election, 200,
			stats(`{"region":"eu","totalVotes":3,"candidates":[{"candidateId":"` + candidate + `","votes":3}]}`), ""},
		{"regional breakdown without candidates", "GET", "/api/v1/results/statistics/" + election, 200,
			stats(`{"region":"eu","totalVotes":3}`), "candidates"},
		{"vote accepted", "POST", "/api/v1/votes", 200,
			`{"voteId":"019a4b2c-7d3e-7f10-8a2b-3c4d5e6f7a8b","status":"accepted","acceptedAt":"2026-11-01T20:15:00Z"}`, ""},
		{"vote with another status", "POST", "/api/v1/votes", 200,
			`{"voteId":"019a4b2c-7d3e-7f10-8a2b-3c4d5e6f7a8b","status":"queued","acceptedAt":"2026-11-01T20:15:00Z"}`, "status"},
		{"status of an auth0 subject (documented deviation)", "GET", "/api/v1/votes/status/" + election + "/auth0%7Cviewer-7", 200,
			`{"electionId":"` + election + `","userId":"auth0|viewer-7","hasVoted":false}`, ""},
		{"status without hasVoted", "GET", "/api/v1/votes/status/" + election + "/auth0%7Cviewer-7", 200,
			`{"electionId":"` + election + `","userId":"auth0|viewer-7"}`, "hasVoted"},
		{"admin list, shared contract only", "GET", "/api/v1/admin/elections", 200, `{"content":[{"id":"nope"}]}`, "id"},
		{"no contract describes the path", "GET", "/metrics", 200, `anything`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "http://127.0.0.1:8080"+tc.path, nil)
			h := http.Header{"Content-Type": {"application/json"}}
			err := c.Check(req, tc.status, h, []byte(tc.body))
			switch {
			case tc.violation == "" && err != nil:
				t.Fatalf("conforming answer refused: %v", err)
			case tc.violation != "" && err == nil:
				t.Fatal("violation not found")
			case tc.violation != "" && !strings.Contains(err.Error(), tc.violation):
				t.Fatalf("violation %q not named in: %v", tc.violation, err)
			}
		})
	}
}

// The transport reports a violation and still hands the answer on.
func TestTransportReportsAndPassesOn(t *testing.T) {
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte(`{"code":"X","message":"m"}`))
	}))
	defer srv.Close()
	var reported []error
	client := &http.Client{Transport: Transport{Contracts: c, Report: func(err error) { reported = append(reported, err) }}}
	resp, err := client.Get(srv.URL + "/api/v1/results/live/550e8400-e29b-41d4-a716-446655440000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot || len(reported) != 1 {
		t.Fatalf("status %d, %d reports: %v", resp.StatusCode, len(reported), reported)
	}
}

// Every error code a response of the project's documents names is answered with that
// response's status (contract/errors.go), and each is in the document's ErrorResponse enum.
func TestDocumentedCodesHaveTheirStatus(t *testing.T) {
	code := regexp.MustCompile("`([A-Z_]+)`")
	for _, name := range Files {
		b, err := files.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := openapi3.NewLoader().LoadFromData(b)
		if err != nil {
			t.Fatal(err)
		}
		enum := map[string]bool{}
		for _, v := range doc.Components.Schemas["ErrorResponse"].Value.Properties["code"].Value.Enum {
			enum[v.(string)] = true
		}
		named := 0
		for path, item := range doc.Paths.Map() {
			for method, op := range item.Operations() {
				for status, ref := range op.Responses.Map() {
					for _, m := range code.FindAllStringSubmatch(*ref.Value.Description, -1) {
						c := m[1]
						if !enum[c] {
							t.Errorf("%s %s %s: %s is not in ErrorResponse.code", name, method, path, c)
						}
						if got := strconv.Itoa(contract.Status(c)); got != status {
							t.Errorf("%s %s %s: %s documented under %s, answered %s", name, method, path, c, status, got)
						}
						named++
					}
				}
			}
		}
		if named == 0 {
			t.Errorf("%s names no error code", name)
		}
	}
}

// The pinned copy of the shared contracts is the published one: when the repository sits
// beside shared/, any difference fails, so a contract change is pulled in on purpose.
func TestPinnedSharedContractsArePublished(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, SharedDir)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("published contracts not beside this clone: %v", err)
	}
	for _, name := range Files {
		published, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		pinned, err := sharedFiles.ReadFile("shared/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(published, pinned) {
			t.Errorf("contract/openapi/shared/%s differs from %s: copy the published file", name, filepath.Join(SharedDir, name))
		}
	}
}
