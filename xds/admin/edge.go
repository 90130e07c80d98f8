package admin

import (
	"errors"
	"net/http"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/xds/audit"
	"github.com/tvvote/voting/xds/edgesettings"
	"github.com/tvvote/voting/xds/elections"
)

// ScopeView is one scope's stored override and what its edges run with.
type ScopeView struct {
	// Scope is "*" (every region) or a region.
	Scope string `json:"scope"`
	// Override is what is stored for the scope; null when it inherits everything.
	Override *edgesettings.Stored `json:"override"`
	// Effective is what the scope's edges run with: for "*", regions without an override.
	Effective edgesettings.Effective `json:"effective"`
}

// SettingsView is GET /api/v1/admin/edge-settings: every override and its effect.
type SettingsView struct {
	// Defaults come from the control plane's environment.
	Defaults edgesettings.Effective `json:"defaults"`
	Global   ScopeView              `json:"global"`
	Regions  []ScopeView            `json:"regions"`
}

// scope is the path's region, or Global without one.
func scope(r *request) (string, error) {
	region := r.PathValue("region")
	if region == "" {
		return edgesettings.Global, nil
	}
	if region == edgesettings.Global || !edgesettings.ValidScope(region) {
		return "", &elections.Error{Code: contract.CodeInvalidRequest,
			Message: "region must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"}
	}
	return region, nil
}

func (a *API) view(r *request, scope string) (ScopeView, error) {
	set, err := a.Edge.Load(r.Context())
	if err != nil {
		return ScopeView{}, err
	}
	return a.scopeView(r, set, scope)
}

func (a *API) scopeView(r *request, set edgesettings.Set, scope string) (ScopeView, error) {
	v := ScopeView{Scope: scope}
	st, err := a.Edge.Get(r.Context(), scope)
	switch {
	case errors.Is(err, edgesettings.ErrNotFound):
	case err != nil:
		return ScopeView{}, err
	default:
		v.Override = &st
	}
	region := scope
	if scope == edgesettings.Global {
		// Regions without an override run with defaults ← global.
		region = ""
	}
	v.Effective = set.Resolve(a.Checker.Defaults(), region)
	return v, nil
}

func (a *API) getEdgeSettings(w http.ResponseWriter, r *request) error {
	sc, err := scope(r)
	if err != nil {
		return err
	}
	if sc != edgesettings.Global {
		v, err := a.view(r, sc)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, v)
		return nil
	}
	set, err := a.Edge.Load(r.Context())
	if err != nil {
		return err
	}
	out := SettingsView{Defaults: a.Checker.Defaults(), Regions: []ScopeView{}}
	if out.Global, err = a.scopeView(r, set, edgesettings.Global); err != nil {
		return err
	}
	for _, region := range set.RegionNames() {
		v, err := a.scopeView(r, set, region)
		if err != nil {
			return err
		}
		out.Regions = append(out.Regions, v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) putEdgeSettings(w http.ResponseWriter, r *request) error {
	sc, err := scope(r)
	if err != nil {
		return err
	}
	var o edgesettings.Override
	if err := decode(r, &o); err != nil {
		return err
	}
	current, err := a.Edge.Load(r.Context())
	if err != nil {
		return err
	}
	if err := a.Checker.CheckEdgeSettings(current, sc, o); err != nil {
		return &elections.Error{Code: contract.CodeInvalidRequest, Message: err.Error()}
	}
	if _, err := a.Edge.Put(r.Context(), r.who, sc, o); err != nil {
		return err
	}
	v, err := a.view(r, sc)
	if err != nil {
		return err
	}
	a.Log.Info("edge settings set", "scope", sc, "perViewer", v.Effective.PerViewer, "perIp", v.Effective.PerIP,
		"captchaMode", v.Effective.CaptchaMode, "trustedHops", v.Effective.TrustedHops, "proxyProtocol", v.Effective.ProxyProtocol,
		"actor", r.who.Subject, "requestId", r.traceID)
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *API) deleteEdgeSettings(w http.ResponseWriter, r *request) error {
	sc, err := scope(r)
	if err != nil {
		return err
	}
	err = a.Edge.Delete(r.Context(), r.who, sc)
	if errors.Is(err, edgesettings.ErrNotFound) {
		return &elections.Error{Code: contract.CodeNotFound, Message: "no edge settings stored for region " + sc}
	}
	if err != nil {
		return err
	}
	a.Log.Info("edge settings removed", "scope", sc, "actor", r.who.Subject, "requestId", r.traceID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listAudit answers GET /api/v1/admin/audit[?electionId=…][&limit=…], newest first.
func (a *API) listAudit(w http.ResponseWriter, r *request) error {
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), 100, 1, 1000, "limit")
	if err != nil {
		return err
	}
	election := ""
	if v := q.Get("electionId"); v != "" {
		r.SetPathValue("electionId", v)
		if election, err = pathUUID(r, "electionId", contract.CodeInvalidElectionID); err != nil {
			return err
		}
	}
	entries, err := audit.List(r.Context(), a.Audit, election, limit)
	if err != nil {
		return err
	}
	if entries == nil {
		entries = []audit.Entry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
	return nil
}
