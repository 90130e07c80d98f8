package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/edgesettings"
	"github.com/tvvote/voting/xds/xdsconfig"
)

const edgeSettingsUsage = `usage: controlplane edge-settings [flags]

Shows or changes the live edge settings through the admin API (audited under the token's sub).
Without a change flag it prints the current settings. Changes reach every Envoy within a second.

  controlplane edge-settings                                  # show everything
  controlplane edge-settings -per-viewer 1/60s                # every region
  controlplane edge-settings -region eu-west-1 -captcha off   # one region
  controlplane edge-settings -region eu-west-1 -per-ip inherit
  controlplane edge-settings -region eu-west-1 -trusted-hops 1  # behind an ALB
  controlplane edge-settings -region eu-west-1 -proxy-protocol true  # behind an NLB sending it
  controlplane edge-settings -region eu-west-1 -reset         # region inherits again

Flags:
`

// edgeSettingsCLI is `controlplane edge-settings`; it returns the exit code.
func edgeSettingsCLI(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edge-settings", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, edgeSettingsUsage)
		fs.PrintDefaults()
	}
	fromEnv, err := xdsconfig.LoadAdminClient(lookupOf(getenv))
	if err != nil {
		fmt.Fprintln(stderr, "edge-settings:", err)
		return 2
	}
	base := fs.String("url", fromEnv.URL,
		"admin API base URL: Envoy's public listener, or the control plane's XDS_ADMIN_ADDR ($XDS_ADMIN_URL)")
	token := fs.String("token", fromEnv.Token, "bearer token with the admin:elections permission ($XDS_ADMIN_TOKEN)")
	region := fs.String("region", "", "region to change; empty changes the fleet-wide settings")
	perViewer := fs.String("per-viewer", "", `per-viewer limit "max/window" (e.g. 5/60s; 0/60s disables) or "inherit"`)
	perIP := fs.String("per-ip", "", `per-IP limit "max/window" or "inherit"`)
	captcha := fs.String("captcha", "", `captcha mode: pow, siteverify, off or "inherit"`)
	hops := fs.String("trusted-hops", "", `proxies in front whose X-Forwarded-For entry is trusted for the client address (0-5), or "inherit"`)
	proxyProtocol := fs.String("proxy-protocol", "", `require the PROXY protocol on the public listener: true, false or "inherit"`)
	reset := fs.Bool("reset", false, "remove the scope's override, so it inherits everything")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *token == "" {
		fmt.Fprintln(stderr, "edge-settings: a token is required (-token or XDS_ADMIN_TOKEN)")
		return 2
	}
	c := &adminClient{base: strings.TrimSuffix(*base, "/"), token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	path := "/api/v1/admin/edge-settings"
	if *region != "" {
		path += "/" + url.PathEscape(*region)
	}
	flags := changes{perViewer: *perViewer, perIP: *perIP, captcha: *captcha, trustedHops: *hops, proxyProtocol: *proxyProtocol}
	change := flags != changes{}
	var out []byte
	switch {
	case *reset && change:
		err = errors.New("-reset cannot be combined with changes")
	case *reset && *region != "":
		if _, err = c.do(ctx, http.MethodDelete, path, nil); err == nil {
			out, err = c.do(ctx, http.MethodGet, path, nil)
		}
	case *reset:
		out, err = c.do(ctx, http.MethodPut, path, edgesettings.Override{})
	case change:
		out, err = c.change(ctx, path, flags)
	default:
		out, err = c.do(ctx, http.MethodGet, path, nil)
	}
	if err != nil {
		fmt.Fprintln(stderr, "edge-settings:", err)
		return 1
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, out, "", "  ") != nil {
		pretty.Write(out)
	}
	fmt.Fprintln(stdout, strings.TrimSpace(pretty.String()))
	return 0
}

type adminClient struct {
	base, token string
	http        *http.Client
}

// changes are the change flags as given; empty leaves a setting as it is.
type changes struct {
	perViewer, perIP, captcha, trustedHops, proxyProtocol string
}

// change reads the scope's override, applies the flags and writes it back: PUT replaces the
// whole override, so fields the flags leave alone must be sent as they are.
func (c *adminClient) change(ctx context.Context, path string, f changes) ([]byte, error) {
	raw, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	var cur struct {
		Override *edgesettings.Override `json:"override"`
		Global   struct {
			Override *edgesettings.Override `json:"override"`
		} `json:"global"`
	}
	if err := json.Unmarshal(raw, &cur); err != nil {
		return nil, fmt.Errorf("read current settings: %w", err)
	}
	var o edgesettings.Override
	switch {
	case cur.Override != nil:
		o = *cur.Override
	case cur.Global.Override != nil:
		o = *cur.Global.Override
	}
	if err := setLimit(&o.PerViewer, f.perViewer); err != nil {
		return nil, fmt.Errorf("-per-viewer: %w", err)
	}
	if err := setLimit(&o.PerIP, f.perIP); err != nil {
		return nil, fmt.Errorf("-per-ip: %w", err)
	}
	switch f.captcha {
	case "":
	case "inherit":
		o.CaptchaMode = ""
	default:
		o.CaptchaMode = f.captcha
	}
	if err := setParsed(&o.TrustedHops, f.trustedHops, strconv.Atoi); err != nil {
		return nil, fmt.Errorf("-trusted-hops: %w", err)
	}
	if err := setParsed(&o.ProxyProtocol, f.proxyProtocol, strconv.ParseBool); err != nil {
		return nil, fmt.Errorf("-proxy-protocol: %w", err)
	}
	return c.do(ctx, http.MethodPut, path, o)
}

// setParsed applies one flag read by parse: empty leaves it, "inherit" clears it. The admin API
// checks the value.
func setParsed[T any](dst **T, v string, parse func(string) (T, error)) error {
	switch v {
	case "":
		return nil
	case "inherit":
		*dst = nil
		return nil
	}
	x, err := parse(v)
	if err != nil {
		return err
	}
	*dst = &x
	return nil
}

// setLimit applies one limit flag: empty leaves it, "inherit" clears it.
func setLimit(dst **edgeconfig.Limit, v string) error {
	switch v {
	case "":
		return nil
	case "inherit":
		*dst = nil
		return nil
	}
	l, err := edgeconfig.ParseLimit(v)
	if err != nil {
		return err
	}
	*dst = &l
	return nil
}

func (c *adminClient) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}
