package contract

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The published OpenAPI file must list every code, under the response of its status.
func TestOpenAPIDocumentsEveryCodeWithItsStatus(t *testing.T) {
	b, err := os.ReadFile("openapi/vote-service.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	enum := regexp.MustCompile(`enum: \[([A-Z_,\s]+)\]`).FindAllStringSubmatch(doc, -1)
	listed := map[string]bool{}
	for _, m := range enum {
		for _, c := range strings.Split(m[1], ",") {
			listed[strings.TrimSpace(c)] = true
		}
	}
	for code, status := range statusByCode {
		if !listed[code] {
			t.Errorf("%s missing from ErrorResponse.code enum", code)
		}
		// The code must be described in a response used under its status somewhere.
		if !strings.Contains(doc, "`"+code+"`") {
			t.Errorf("%s (%d) not described in any response", code, status)
		}
	}
	for code := range listed {
		if _, ok := statusByCode[code]; !ok && code != "accepted" && code != "sha256-leading-zero-bits" {
			t.Errorf("OpenAPI lists %s, which the code base never returns", code)
		}
	}
}

func TestStatusOfUnknownCodeIs500(t *testing.T) {
	if Status("NO_SUCH_CODE") != 500 || Status(CodeDuplicateVote) != 409 || Status(CodeRateLimited) != 429 {
		t.Fatal("status mapping broken")
	}
}
