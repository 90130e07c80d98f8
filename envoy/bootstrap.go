// Package envoy renders the bootstrap an edge Envoy starts with: its identity (node id and
// region) and the way to the control plane. All traffic config comes over ADS from xds/.
package envoy

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/template"
)

//go:embed bootstrap.yaml.tmpl
var bootstrapTemplate string

var bootstrap = template.Must(template.New("bootstrap").Funcs(template.FuncMap{
	"quote": func(s string) (string, error) {
		b, err := json.Marshal(s)
		return string(b), err
	},
}).Parse(bootstrapTemplate))

// BootstrapParams fill the bootstrap template.
type BootstrapParams struct {
	// AdminPort is Envoy's admin listener on 127.0.0.1.
	AdminPort int
	// XDSPort is the control plane's ADS port on 127.0.0.1.
	XDSPort int
	// NodeID names this Envoy to the control plane; unique per running Envoy.
	NodeID string
	// Region is the fleet's region; the control plane stamps it into the vote filter config.
	Region string
	// ListenerPort, when not 0, asks the control plane for a public listener on this port
	// instead of its default, so several edges can run on one host (development, tests).
	ListenerPort int
}

// RenderBootstrap writes the bootstrap YAML for p to w.
func RenderBootstrap(w io.Writer, p BootstrapParams) error {
	var errs []error
	if p.AdminPort < 1 || p.AdminPort > 65535 {
		errs = append(errs, fmt.Errorf("admin port %d out of range 1-65535", p.AdminPort))
	}
	if p.XDSPort < 1 || p.XDSPort > 65535 {
		errs = append(errs, fmt.Errorf("xds port %d out of range 1-65535", p.XDSPort))
	}
	if p.NodeID == "" {
		errs = append(errs, errors.New("node id is required"))
	}
	if p.ListenerPort < 0 || p.ListenerPort > 65535 {
		errs = append(errs, fmt.Errorf("listener port %d out of range 1-65535", p.ListenerPort))
	}
	if p.Region == "" {
		errs = append(errs, errors.New("region is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("envoy bootstrap: %w", err)
	}
	return bootstrap.Execute(w, p)
}
