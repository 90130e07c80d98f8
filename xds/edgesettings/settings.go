// Package edgesettings holds what SREs tune live at the edge — the per-viewer and per-IP rate
// limits and the captcha mode — fleet-wide or per region. Overrides live in PostgreSQL; the
// control plane's environment gives the defaults; a region override wins over the global one.
package edgesettings

import (
	"errors"
	"fmt"
	"regexp"
	"sort"

	"github.com/tvvote/voting/filters/votefilter"
)

// Global is the scope that applies to every region.
const Global = "*"

// MaxWindowSeconds bounds a limit's window; a longer one is almost certainly a typo.
const MaxWindowSeconds = 86400

// CaptchaModes are the modes the vote filter knows.
var CaptchaModes = []string{"pow", "siteverify", "off"}

var regionName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Override is one scope's settings; a nil or empty field inherits.
type Override struct {
	// PerViewer limits vote attempts per viewer (token sub).
	PerViewer *votefilter.Limit `json:"perViewer,omitempty"`
	// PerIP limits vote attempts per client address.
	PerIP *votefilter.Limit `json:"perIp,omitempty"`
	// CaptchaMode is pow, siteverify or off.
	CaptchaMode string `json:"captchaMode,omitempty"`
}

// Effective is what one region's edges run with.
type Effective struct {
	PerViewer   votefilter.Limit `json:"perViewer"`
	PerIP       votefilter.Limit `json:"perIp"`
	CaptchaMode string           `json:"captchaMode"`
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
	for name, l := range map[string]*votefilter.Limit{"perViewer": o.PerViewer, "perIp": o.PerIP} {
		if l == nil {
			continue
		}
		if l.Max < 0 {
			errs = append(errs, fmt.Errorf("%s.max must be >= 0 (0 disables the limit)", name))
		}
		if l.WindowSeconds < 1 || l.WindowSeconds > MaxWindowSeconds {
			errs = append(errs, fmt.Errorf("%s.windowSeconds must be 1..%d", name, MaxWindowSeconds))
		}
	}
	if o.CaptchaMode != "" {
		known := false
		for _, m := range CaptchaModes {
			known = known || m == o.CaptchaMode
		}
		if !known {
			errs = append(errs, fmt.Errorf("captchaMode %q is not one of pow, siteverify, off", o.CaptchaMode))
		}
	}
	sortErrs(errs)
	return errors.Join(errs...)
}

// sortErrs makes the message independent of map order.
func sortErrs(errs []error) {
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
}
