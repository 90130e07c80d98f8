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
	"strings"
	"time"

	"github.com/tvvote/voting/filters/votefilter"
	"github.com/tvvote/voting/xds/edgesettings"
)

const edgeSettingsUsage = `usage: controlplane edge-settings [flags]

Shows or changes the live edge settings through the admin API (audited under the token's sub).
Without a change flag it prints the current settings. Changes reach every Envoy within a second.

  controlplane edge-settings                                  # show everything
  controlplane edge-settings -per-viewer 1/60s                # every region
  controlplane edge-settings -region eu-west-1 -captcha off   # one region
  controlplane edge-settings -region eu-west-1 -per-ip inherit
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
	base := fs.String("url", firstNonEmpty(getenv("XDS_ADMIN_URL"), "http://127.0.0.1:8080"),
		"admin API base URL: Envoy's public listener, or the control plane's XDS_ADMIN_ADDR ($XDS_ADMIN_URL)")
	token := fs.String("token", getenv("XDS_ADMIN_TOKEN"), "bearer token with the admin:elections permission ($XDS_ADMIN_TOKEN)")
	region := fs.String("region", "", "region to change; empty changes the fleet-wide settings")
	perViewer := fs.String("per-viewer", "", `per-viewer limit "max/window" (e.g. 5/60s; 0/60s disables) or "inherit"`)
	perIP := fs.String("per-ip", "", `per-IP limit "max/window" or "inherit"`)
	captcha := fs.String("captcha", "", `captcha mode: pow, siteverify, off or "inherit"`)
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
	change := *perViewer != "" || *perIP != "" || *captcha != ""
	var out []byte
	var err error
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
		out, err = c.change(ctx, path, *perViewer, *perIP, *captcha)
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

// change reads the scope's override, applies the flags and writes it back: PUT replaces the
// whole override, so fields the flags leave alone must be sent as they are.
func (c *adminClient) change(ctx context.Context, path, perViewer, perIP, captcha string) ([]byte, error) {
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
	if err := setLimit(&o.PerViewer, perViewer); err != nil {
		return nil, fmt.Errorf("-per-viewer: %w", err)
	}
	if err := setLimit(&o.PerIP, perIP); err != nil {
		return nil, fmt.Errorf("-per-ip: %w", err)
	}
	switch captcha {
	case "":
	case "inherit":
		o.CaptchaMode = ""
	default:
		o.CaptchaMode = captcha
	}
	return c.do(ctx, http.MethodPut, path, o)
}

// setLimit applies one limit flag: empty leaves it, "inherit" clears it.
func setLimit(dst **votefilter.Limit, v string) error {
	switch v {
	case "":
		return nil
	case "inherit":
		*dst = nil
		return nil
	}
	l, err := parseLimit(v)
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

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
