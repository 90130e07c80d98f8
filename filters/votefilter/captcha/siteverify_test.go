package captcha

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestSiteverifyRequest(t *testing.T) {
	body := SiteverifyRequest("s3cr&t", "tok+en=1", "1.2.3.4")
	v, err := url.ParseQuery(string(body))
	if err != nil {
		t.Fatalf("%q is not a form: %v", body, err)
	}
	if v.Get("secret") != "s3cr&t" || v.Get("response") != "tok+en=1" || v.Get("remoteip") != "1.2.3.4" || len(v) != 3 {
		t.Errorf("form = %v", v)
	}
	if strings.Contains(string(body), "&t&") || strings.Contains(string(body), "tok+en=1") {
		t.Errorf("values are not escaped: %q", body)
	}
	v, _ = url.ParseQuery(string(SiteverifyRequest("s", "t", "")))
	if _, ok := v["remoteip"]; ok || len(v) != 2 {
		t.Errorf("form without an IP = %v, want no remoteip", v)
	}
}

func TestCheckSiteverify(t *testing.T) {
	ok := []struct {
		name, body string
		min        float64
	}{
		{"turnstile success", `{"success":true,"error-codes":[],"challenge_ts":"2026-01-15T21:00:00Z","hostname":"vote.test"}`, 0.5},
		{"hcaptcha success", `{"success":true}`, 0},
		{"v3 score above min", `{"success":true,"score":0.9,"action":"vote"}`, 0.5},
		{"v3 score at min", `{"success":true,"score":0.5}`, 0.5},
		{"no score passes on success alone", `{"success":true}`, 0.7},
		{"unknown fields ignored", `{"success":true,"cdata":"x","metadata":{"a":1}}`, 0},
	}
	for _, tc := range ok {
		if err := CheckSiteverify(200, []byte(tc.body), tc.min); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}

	refused := []struct {
		name, body string
		min        float64
		mention    string
	}{
		{"failure with codes", `{"success":false,"error-codes":["invalid-input-response","timeout-or-duplicate"]}`, 0,
			"invalid-input-response,timeout-or-duplicate"},
		{"failure without codes", `{"success":false}`, 0, ""},
		{"success missing", `{"score":0.9}`, 0, ""},
		{"score below min", `{"success":true,"score":0.3}`, 0.5, "score 0.30 below 0.50"},
		{"score zero", `{"success":true,"score":0}`, 0.1, "score 0.00"},
	}
	// A garbled answer is the provider's fault, not the viewer's: an outage, never a pass.
	if err := CheckSiteverify(200, []byte(`{"success":"true"}`), 0); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrFailed) {
		t.Errorf("success as a string: %v, want ErrUnavailable only", err)
	}
	for _, tc := range refused {
		err := CheckSiteverify(200, []byte(tc.body), tc.min)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !errors.Is(err, ErrFailed) {
			t.Errorf("%s: %v does not wrap ErrFailed (the viewer's token was refused)", tc.name, err)
		}
		if !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%s: %v does not mention %q", tc.name, err, tc.mention)
		}
	}

	// Answers that are not a verdict on the token: never a pass.
	broken := []struct {
		name   string
		status int
		body   string
	}{
		{"HTTP 500", 500, `{"success":true}`},
		{"HTTP 503", 503, ``},
		{"HTTP 400", 400, `{"success":false,"error-codes":["missing-input-secret"]}`},
		{"garbage", 200, `<html>oops</html>`},
		{"empty", 200, ``},
		{"truncated", 200, `{"success":tr`},
		{"null", 200, `null`},
	}
	for _, tc := range broken {
		if err := CheckSiteverify(tc.status, []byte(tc.body), 0); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// An answer that is not a verdict on the token (the service failed, or said nothing
// readable) must not read as "the viewer's captcha was refused": votefilter.CaptchaRejected
// turns ErrFailed into 403 CAPTCHA_FAILED and anything else into 503 with Retry-After.
func TestSiteverifyOutageIsNotARefusal(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
	}{{500, `{"success":true}`}, {502, ``}, {503, `busy`}, {429, `{}`}, {200, `<html>`}, {200, ``}} {
		err := CheckSiteverify(tc.status, []byte(tc.body), 0)
		if err == nil || errors.Is(err, ErrFailed) {
			t.Errorf("HTTP %d %q: %v; want an error that is not ErrFailed", tc.status, tc.body, err)
		}
	}
}
