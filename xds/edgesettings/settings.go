// Package edgesettings holds what SREs tune live at the edge — the per-viewer and per-IP rate
// limits, the captcha mode, and where the client address comes from (the trusted
// X-Forwarded-For hops and the PROXY protocol of the load balancer in front) — fleet-wide or
// per region. Overrides live in PostgreSQL; the
// control plane's environment gives the defaults; a region override wins over the global one.
package edgesettings

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"

	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

// Global is the scope that applies to every region.
const Global = "*"

// MaxTrustedHops bounds the proxies trusted in front of the edge; more is a misconfiguration,
// not a deployment.
const MaxTrustedHops = 5

var regionName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Override is one scope's settings; a nil or empty field inherits.
type Override struct {
	// PerViewer limits vote attempts per viewer (token sub).
	PerViewer *edgeconfig.Limit `json:"perViewer,omitempty"`
	// PerIP limits vote attempts per client address.
	PerIP *edgeconfig.Limit `json:"perIp,omitempty"`
	// CaptchaMode is pow, siteverify or off.
	CaptchaMode string `json:"captchaMode,omitempty"`
	// TrustedHops is how many proxies in front of the edge append to X-Forwarded-For (an ALB:
	// 1). The client address, which the per-IP limit counts, is the X-Forwarded-For entry that
	// many from the right; with 0 it is the connection's peer and X-Forwarded-For is ignored.
	TrustedHops *int `json:"trustedHops,omitempty"`
	// ProxyProtocol makes the public listener require the PROXY protocol header (v1 or v2) that
	// a network load balancer sends, and take the peer address from it.
	ProxyProtocol *bool `json:"proxyProtocol,omitempty"`
}

// Effective is what one region's edges run with.
type Effective struct {
	PerViewer     edgeconfig.Limit `json:"perViewer"`
	PerIP         edgeconfig.Limit `json:"perIp"`
	CaptchaMode   string           `json:"captchaMode"`
	TrustedHops   int              `json:"trustedHops"`
	ProxyProtocol bool             `json:"proxyProtocol"`
}

// Set is every stored override.
type Set struct {
	Global  Override            `json:"global"`
	Regions map[string]Override `json:"regions"`
}

// Resolve layers the overrides for region on top of defaults: defaults ← global ← region.
func (s Set) Resolve(defaults Effective, region string) Effective {
	e := defaults
	for _, o := range []Override{s.Global, s.Regions[region]} {
		if o.PerViewer != nil {
			e.PerViewer = *o.PerViewer
		}
		if o.PerIP != nil {
			e.PerIP = *o.PerIP
		}
		if o.CaptchaMode != "" {
			e.CaptchaMode = o.CaptchaMode
		}
		if o.TrustedHops != nil {
			e.TrustedHops = *o.TrustedHops
		}
		if o.ProxyProtocol != nil {
			e.ProxyProtocol = *o.ProxyProtocol
		}
	}
	return e
}

// RegionNames lists the regions with an override, sorted.
func (s Set) RegionNames() []string {
	out := make([]string, 0, len(s.Regions))
	for r := range s.Regions {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// ValidScope reports whether scope is Global or a well-formed region name.
func ValidScope(scope string) bool { return scope == Global || regionName.MatchString(scope) }

// Validate checks an override on its own; whether a captcha mode can run with the control
// plane's configuration (a pow secret, a siteverify service) is checked by the snapshot builder.
func (o Override) Validate() error {
	var errs []error
	for name, l := range map[string]*edgeconfig.Limit{"perViewer": o.PerViewer, "perIp": o.PerIP} {
		if l == nil {
			continue
		}
		if err := l.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if o.CaptchaMode != "" {
		if !slices.Contains(edgeconfig.CaptchaModes, o.CaptchaMode) {
			errs = append(errs, fmt.Errorf("captchaMode %q is not one of pow, siteverify, off", o.CaptchaMode))
		}
	}
	if o.TrustedHops != nil && (*o.TrustedHops < 0 || *o.TrustedHops > MaxTrustedHops) {
		errs = append(errs, fmt.Errorf("trustedHops must be 0..%d", MaxTrustedHops))
	}
	sortErrs(errs)
	return errors.Join(errs...)
}

// sortErrs makes the message independent of map order.
func sortErrs(errs []error) {
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
}
