package main

import (
	"testing"

	"github.com/tvvote/voting/filters/votefilter/envoymodule"
)

func TestVerifiedClaimsNamesMatchTheModule(t *testing.T) {
	if verifiedClaimsFilterName != envoymodule.VerifiedClaimsFilterName || verifiedSubjectNamespace != envoymodule.VerifiedSubjectNamespace ||
		verifiedSubjectKey != envoymodule.VerifiedSubjectKey {
		t.Errorf("the benchmark names %q %q %q, the module %q %q %q", verifiedClaimsFilterName, verifiedSubjectNamespace,
			verifiedSubjectKey, envoymodule.VerifiedClaimsFilterName, envoymodule.VerifiedSubjectNamespace, envoymodule.VerifiedSubjectKey)
	}
}
