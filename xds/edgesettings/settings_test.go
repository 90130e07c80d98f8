package edgesettings_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tvvote/voting/devstack/stacktest"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/audit"
	"github.com/tvvote/voting/xds/edgesettings"
)

func limit(max, window int) *edgeconfig.Limit {
	return &edgeconfig.Limit{Max: max, WindowSeconds: window}
}

func hops(n int) *int { return &n }

func TestResolveLayersRegionOverGlobalOverDefaults(t *testing.T) {
	defaults := edgesettings.Effective{PerViewer: *limit(10, 60), PerIP: *limit(600, 60), CaptchaMode: "pow"}
	set := edgesettings.Set{
		Global:  edgesettings.Override{PerViewer: limit(5, 60), CaptchaMode: "off"},
		Regions: map[string]edgesettings.Override{"eu": {PerViewer: limit(1, 30)}, "us": {CaptchaMode: "siteverify"}},
	}
	for region, want := range map[string]edgesettings.Effective{
		"eu":    {PerViewer: *limit(1, 30), PerIP: *limit(600, 60), CaptchaMode: "off"},
		"us":    {PerViewer: *limit(5, 60), PerIP: *limit(600, 60), CaptchaMode: "siteverify"},
		"other": {PerViewer: *limit(5, 60), PerIP: *limit(600, 60), CaptchaMode: "off"},
	} {
		if got := set.Resolve(defaults, region); got != want {
			t.Errorf("%s: %+v, want %+v", region, got, want)
		}
	}
	if got := (edgesettings.Set{}).Resolve(defaults, "eu"); got != defaults {
		t.Errorf("nothing stored: %+v", got)
	}
}

// Where the client address comes from is inherited like the limits; an explicit 0 or false
// overrides a default that says otherwise.
func TestResolveClientAddress(t *testing.T) {
	zero, one, two, yes, no := 0, 1, 2, true, false
	defaults := edgesettings.Effective{TrustedHops: 1, ProxyProtocol: true}
	set := edgesettings.Set{
		Global:  edgesettings.Override{TrustedHops: &two},
		Regions: map[string]edgesettings.Override{"direct": {TrustedHops: &zero, ProxyProtocol: &no}, "alb": {TrustedHops: &one, ProxyProtocol: &yes}},
	}
	for region, want := range map[string]edgesettings.Effective{
		"direct": {TrustedHops: 0, ProxyProtocol: false},
		"alb":    {TrustedHops: 1, ProxyProtocol: true},
		"other":  {TrustedHops: 2, ProxyProtocol: true},
	} {
		if got := set.Resolve(defaults, region); got != want {
			t.Errorf("%s: %+v, want %+v", region, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for name, o := range map[string]edgesettings.Override{
		"negative max":  {PerViewer: limit(-1, 60)},
		"zero window":   {PerIP: limit(5, 0)},
		"huge window":   {PerIP: limit(5, 86401)},
		"unknown mode":  {CaptchaMode: "recaptcha"},
		"both problems": {PerViewer: limit(-1, 0), CaptchaMode: "x"},
		"negative hops": {TrustedHops: hops(-1)},
		"too many hops": {TrustedHops: hops(edgesettings.MaxTrustedHops + 1)},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := (edgesettings.Override{PerViewer: limit(0, 1), CaptchaMode: "off", TrustedHops: hops(edgesettings.MaxTrustedHops)}).Validate(); err != nil {
		t.Errorf("valid override refused: %v", err)
	}
	// A disabled limit needs no window: the one rule of edgeconfig.Limit.
	if err := (edgesettings.Override{PerIP: limit(0, 0)}).Validate(); err != nil {
		t.Errorf("disabled limit without a window refused: %v", err)
	}
	for scope, ok := range map[string]bool{"*": true, "eu-west-1": true, "us_east.2": true, "": false, "-eu": false, "eu west": false} {
		if edgesettings.ValidScope(scope) != ok {
			t.Errorf("ValidScope(%q) = %v", scope, !ok)
		}
	}
}

// TestStoreOnPostgres runs against a real PostgreSQL; a missing server fails the test.
func TestStoreOnPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := stacktest.Postgres(t).Pool
	s := edgesettings.NewStore(pool)
	sre := audit.Actor{Subject: "sre-1", TraceID: "trace-1"}

	if set, err := s.Load(ctx); err != nil || set.Global != (edgesettings.Override{}) || len(set.Regions) != 0 {
		t.Fatalf("empty store: %+v %v", set, err)
	}
	// The table takes every limit the rule allows, a disabled one without a window included.
	if _, err := s.Put(ctx, sre, edgesettings.Global, edgesettings.Override{PerIP: limit(0, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, sre, edgesettings.Global, edgesettings.Override{PerViewer: limit(1, 60)}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Put(ctx, sre, "eu-west-1", edgesettings.Override{PerIP: limit(20, 10), CaptchaMode: "off"})
	if err != nil {
		t.Fatal(err)
	}
	if st.UpdatedBy != "sre-1" || st.CaptchaMode != "off" || *st.PerIP != *limit(20, 10) || st.PerViewer != nil {
		t.Fatalf("stored %+v", st)
	}
	// Trusted hops and the PROXY protocol, 0 and false included, are stored as set.
	pp := false
	st, err = s.Put(ctx, sre, "eu-west-1", edgesettings.Override{TrustedHops: hops(0), ProxyProtocol: &pp})
	if err != nil {
		t.Fatal(err)
	}
	if st.TrustedHops == nil || *st.TrustedHops != 0 || st.ProxyProtocol == nil || *st.ProxyProtocol || st.PerIP != nil {
		t.Fatalf("stored %+v", st)
	}
	pp = true
	if st, err = s.Put(ctx, sre, "eu-west-1", edgesettings.Override{TrustedHops: hops(2), ProxyProtocol: &pp}); err != nil ||
		*st.TrustedHops != 2 || !*st.ProxyProtocol {
		t.Fatalf("stored %+v %v", st, err)
	}
	if got, err := s.Get(ctx, "eu-west-1"); err != nil || *got.TrustedHops != 2 || !*got.ProxyProtocol {
		t.Fatalf("read back %+v %v", got, err)
	}
	// PUT replaces: what is not sent inherits again.
	if _, err := s.Put(ctx, sre, "eu-west-1", edgesettings.Override{CaptchaMode: "pow"}); err != nil {
		t.Fatal(err)
	}
	set, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if *set.Global.PerViewer != *limit(1, 60) || set.Regions["eu-west-1"].PerIP != nil || set.Regions["eu-west-1"].CaptchaMode != "pow" ||
		set.Regions["eu-west-1"].TrustedHops != nil || set.Regions["eu-west-1"].ProxyProtocol != nil {
		t.Fatalf("loaded %+v", set)
	}
	if err := s.Delete(ctx, sre, "eu-west-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, sre, "eu-west-1"); !errors.Is(err, edgesettings.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := s.Get(ctx, "eu-west-1"); !errors.Is(err, edgesettings.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	entries, err := audit.List(ctx, pool, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range entries {
		if e.Actor != "sre-1" || e.TraceID != "trace-1" || e.Entity != "edge_settings" {
			t.Fatalf("audit entry %+v", e)
		}
		actions = append(actions, e.Action+" "+e.EntityID)
	}
	want := []string{"edge_settings.delete eu-west-1", "edge_settings.put eu-west-1", "edge_settings.put eu-west-1",
		"edge_settings.put eu-west-1", "edge_settings.put eu-west-1", "edge_settings.put *", "edge_settings.put *"}
	if len(actions) != len(want) {
		t.Fatalf("audit %v", actions)
	}
	for i := range want {
		if actions[i] != want[i] {
			t.Fatalf("audit %v, want %v", actions, want)
		}
	}
	if entries[0].After != nil || entries[0].Before == nil {
		t.Fatalf("delete entry before/after: %s / %s", entries[0].Before, entries[0].After)
	}
}
