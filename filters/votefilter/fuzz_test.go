package votefilter

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

// FuzzParseBody: ParseBody never panics, and whatever it accepts is a contract-valid
// VoteRequest that is the body's one and only JSON value.
//
//	go test ./filters/votefilter -run '^$' -fuzz FuzzParseBody -fuzztime 30s
func FuzzParseBody(f *testing.F) {
	good := voteBody(testElection, testCandidate, goodCaptcha)
	seeds := []struct{ ct, body string }{
		{"application/json", good},
		{"application/json; charset=utf-8", good},
		{"APPLICATION/JSON", good},
		{"text/plain", good},
		{"", good},
		{"application/json; charset", good},
		{"application/json", ""},
		{"application/json", "null"},
		{"application/json", "{}"},
		{"application/json", "[]"},
		{"application/json", "{"},
		{"application/json", good + good},
		{"application/json", good + " x"},
		{"application/json", " \n" + good + "\t"},
		{"application/json", `{"electionId":1}`},
		{"application/json", `{"electionId":"` + testElection + `","candidateId":"` + testCandidate + `","captchaToken":"` + goodCaptcha + `","x":1}`},
		{"application/json", `{"ELECTIONID":"` + testElection + `","candidateid":"` + testCandidate + `","CaptchaToken":"` + goodCaptcha + `"}`},
		{"application/json", `{"electionId":"` + testElection + `","electionId":"nope","candidateId":"` + testCandidate + `","captchaToken":"` + goodCaptcha + `"}`},
		{"application/json", voteBody(strings.ToUpper(testElection), testCandidate, goodCaptcha)},
		{"application/json", voteBody(testElection, testCandidate, strings.Repeat("c", 19))},
		{"application/json", voteBody(testElection, testCandidate, strings.Repeat("c", 20))},
		{"application/json", voteBody(testElection, testCandidate, strings.Repeat("c", 5000))},
		{"application/json", voteBody("g"+testElection[1:], testCandidate, goodCaptcha)},
		{"application/json", voteBody(testElection, testCandidate[:35]+"-", goodCaptcha)},
		{"application/json", `{"electionId":"\u0033f1c2a9e-8b4d-4c6e-9f0a-1b2c3d4e5f60","candidateId":"` + testCandidate + `","captchaToken":"` + goodCaptcha + `"}`},
		{"application/json", "{\"electionId\":\"" + testElection + "\",\"candidateId\":\"" + testCandidate + "\",\"captchaToken\":\"\xff\xfe" + goodCaptcha + "\"}"},
		{"application/json", strings.Repeat("[", 10000)},
	}
	for _, s := range seeds {
		f.Add(s.ct, []byte(s.body))
	}
	a := mustAdmitter(f, testConfig())
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		vr, rej := a.ParseBody(ct, body)
		if (vr == nil) == (rej == nil) {
			t.Fatalf("ParseBody returned request %v and rejection %v: exactly one must be set", vr, rej)
		}
		if rej != nil {
			if s := contract.Status(rej.Code); s < 400 || s > 499 {
				t.Fatalf("body rejection %s maps to status %d, want a 4xx", rej.Code, s)
			}
			if rej.Message == "" {
				t.Fatalf("rejection %s has no message", rej.Code)
			}
			return
		}
		if len(body) > a.cfg.MaxBodyBytes {
			t.Fatalf("accepted a %d-byte body (limit %d)", len(body), a.cfg.MaxBodyBytes)
		}
		if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/json") {
			t.Fatalf("accepted content type %q", ct)
		}
		for _, id := range []string{vr.ElectionID, vr.CandidateID} {
			if !contract.IsUUID(id) {
				t.Fatalf("accepted id %q that is not a uuid", id)
			}
			if _, err := uuid.Parse(id); err != nil {
				t.Fatalf("accepted id %q that google/uuid refuses: %v", id, err)
			}
		}
		if len(vr.CaptchaToken) < contract.CaptchaTokenMinLength {
			t.Fatalf("accepted a %d-byte captcha token", len(vr.CaptchaToken))
		}
		// The body is one JSON object and nothing else.
		trimmed := bytes.TrimSpace(body)
		if !json.Valid(trimmed) || len(trimmed) == 0 || trimmed[0] != '{' {
			t.Fatalf("accepted %q, which is not exactly one JSON object", body)
		}
	})
}

// FuzzParseConfig: edgeconfig.Parse never panics; an accepted config is complete, has its defaults
// filled, can be indexed by NewAdmitter, and survives a marshal/parse round trip unchanged.
//
//	go test ./filters/votefilter -run '^$' -fuzz FuzzParseConfig -fuzztime 30s
func FuzzParseConfig(f *testing.F) {
	seeds := []string{
		validConfigJSON,
		strings.Replace(validConfigJSON, `"region": "eu-west-1",`, `"region": "eu-west-1", "enqueueTimeoutMs": 750, "maxBodyBytes": 1024,`, 1),
		strings.Replace(validConfigJSON, `"2026-01-15T22:00:00Z"`, `"2026-01-15T23:00:00+01:00"`, 1),
		strings.Replace(validConfigJSON, `"region": "eu-west-1",`, `"region": "eu-west-1", "bogus": true,`, 1),
		strings.Replace(validConfigJSON, `"endDate": "2026-01-15T22:00:00Z"`, `"endDate": "2026-01-15T19:00:00Z"`, 1),
		strings.Replace(validConfigJSON, `"candidateIds": ["a0b1c2d3-e4f5-4a6b-8c7d-8e9f0a1b2c3d"]`, `"candidateIds": null`, 1),
		validConfigJSON + " trailing",
		`{}`,
		`null`,
		``,
		`[]`,
		`{"region":"r","jwt":{"issuer":"i","audience":"a","jwksUrl":"u"},"redis":{"addr":"a"},"sqs":{"queueUrl":"q","region":"r"}}`,
		`{"region":"r","jwt":{"issuer":"i","audience":"a","jwksUrl":"u"},"redis":{"addr":"a"},"sqs":{"queueUrl":"q","region":"r"},"elections":[null]}`,
		`{"region":"r","elections":[{"id":"` + testElection + `","startDate":"0001-01-01T00:00:00Z","endDate":"9999-12-31T23:59:59Z"}]}`,
		`{"region":"r","maxBodyBytes":1e400}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := edgeconfig.Parse(raw)
		if err != nil {
			if c != nil {
				t.Fatalf("edgeconfig.Parse returned a config with error %v", err)
			}
			return
		}
		if c.Region == "" || c.JWT.Issuer == "" || c.JWT.Audience == "" || c.JWT.JWKSURL == "" ||
			c.Redis.Addr == "" || c.SQS.QueueURL == "" || c.SQS.Region == "" {
			t.Fatalf("accepted an incomplete config: %+v", c)
		}
		if c.EnqueueTimeoutMs == 0 || c.MaxBodyBytes == 0 || c.Redis.DedupTTLSeconds == 0 || c.JWT.LeewaySeconds == 0 {
			t.Fatalf("defaults not filled: %+v", c)
		}
		for i, e := range c.Elections {
			if !contract.IsUUID(e.ID) {
				t.Fatalf("elections[%d].id %q accepted", i, e.ID)
			}
			if !e.EndDate.After(e.StartDate) {
				t.Fatalf("elections[%d] accepted with end %v not after start %v", i, e.EndDate, e.StartDate)
			}
		}
		if _, err := NewAdmitter(c, nil, nil, nil, captcha.StaticKey("0123456789abcdef-test")); err != nil {
			t.Fatalf("NewAdmitter refused a config edgeconfig.Parse accepted: %v", err)
		}

		once, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("accepted config does not marshal: %v", err)
		}
		c2, err := edgeconfig.Parse(once)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", once, err)
		}
		twice, _ := json.Marshal(c2)
		if !bytes.Equal(once, twice) {
			t.Fatalf("round trip changed the config:\n%s\n%s", once, twice)
		}
	})
}
