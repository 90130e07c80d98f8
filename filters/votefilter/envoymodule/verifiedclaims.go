package envoymodule

import (
	"context"

	sdk "github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go"
	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/filters/votefilter/edgeruntime"
)

// A benchmark variant of the vote filter (loadtest/edge, "Envoy-native auth"): Envoy's own
// jwt_authn filter verifies the token ahead of this one, and this filter takes the viewer from
// Envoy's dynamic metadata instead of verifying the token a second time. The control plane never
// configures it; only the benchmark's static Envoy names it.
//
// The SDK reads a dynamic metadata value only when it is a string at the top level of its
// namespace (HttpFilterHandle.GetMetadataString), while jwt_authn stores the payload as a nested
// struct (payload_in_metadata). So the Envoy in front copies the verified sub claim to a request
// header (jwt_authn claim_to_headers) and header_to_metadata moves it into
// VerifiedSubjectNamespace / VerifiedSubjectKey, removing the header.
const (
	VerifiedClaimsFilterName = "votefilter_verified_claims"
	VerifiedSubjectNamespace = "votefilter.verified"
	VerifiedSubjectKey       = "sub"
)

func init() {
	sdk.RegisterHttpFilterConfigFactories(map[string]shared.HttpFilterConfigFactory{
		VerifiedClaimsFilterName: &verifiedClaimsConfigFactory{},
	})
}

type verifiedClaimsConfigFactory struct {
	shared.EmptyHttpFilterConfigFactory
}

// Create builds the regular filter's config, then swaps its admitter for one that trusts the
// subject Envoy verified. The store and the queue are the process-wide ones the regular
// filter uses (edgeruntime), so only the verifier differs.
func (verifiedClaimsConfigFactory) Create(h shared.HttpFilterConfigHandle, raw []byte) (shared.HttpFilterFactory, error) {
	ff, err := configFactory{}.Create(h, raw)
	if err != nil {
		return nil, err
	}
	f := ff.(*filterFactory)
	built, err := edgeruntime.BuildVerifying(f.adm.Config(), log, reportBatch, verifiedSubject{})
	if err != nil {
		return nil, err
	}
	f.adm = built.Admitter
	h.Log(shared.LogLevelWarn, "votefilter: the viewer is taken from Envoy's jwt_authn (benchmark variant), tokens are not verified here")
	return verifiedClaimsFactory{f}, nil
}

type verifiedClaimsFactory struct{ *filterFactory }

func (f verifiedClaimsFactory) Create(h shared.HttpFilterHandle) shared.HttpFilter {
	return &verifiedClaimsFilter{filter{h: h, f: f.filterFactory}}
}

// verifiedClaimsFilter is the regular filter with the Authorization header replaced by the
// verified subject before the filter reads it, or removed when Envoy verified none, so a
// client's own header never reaches the trusting verifier.
type verifiedClaimsFilter struct{ filter }

func (p *verifiedClaimsFilter) OnRequestHeaders(headers shared.HeaderMap, endOfStream bool) shared.HeadersStatus {
	if sub, ok := p.h.GetMetadataString(shared.MetadataSourceTypeDynamic, VerifiedSubjectNamespace, VerifiedSubjectKey); ok {
		headers.Set("authorization", "Bearer "+sub.ToString())
	} else {
		headers.Remove("authorization")
	}
	return p.filter.OnRequestHeaders(headers, endOfStream)
}

// verifiedSubject is the verifier of the variant: the bearer value is the subject Envoy's
// jwt_authn verified, put there by verifiedClaimsFilter.
type verifiedSubject struct{}

func (verifiedSubject) Verify(_ context.Context, sub string) (auth.Principal, error) {
	return auth.Principal{Subject: sub}, nil
}
