// Package envoy renders the bootstrap an edge Envoy starts with: its identity (node id and
// region) and the way to the control plane. All traffic config comes over ADS from xds/.
package envoy

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
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
	// XDSTLS, when set, reaches the control plane over mutual TLS.
	XDSTLS *XDSTLS
}

// XDSTLS is Envoy's side of ADS over mutual TLS: absolute paths of PEM files on the Envoy host.
// Envoy reads them at start; a rotated client certificate takes effect with the next Envoy.
type XDSTLS struct {
	// CertFile and KeyFile are the client certificate chain and its key Envoy shows; both empty
	// shows none, which a control plane requiring client certificates refuses (for tests).
	CertFile, KeyFile string
	// CAFile verifies the control plane's certificate.
	CAFile string
	// ServerName is the name (or IP) the control plane's certificate must carry as a SAN; also the SNI.
	ServerName string
}

// ServerNameIsIP says the SAN to match is an IP address SAN rather than a DNS one.
func (t XDSTLS) ServerNameIsIP() bool { return net.ParseIP(t.ServerName) != nil }

func (t XDSTLS) validate() []error {
	var errs []error
	for _, f := range []struct{ what, path string }{{"client certificate", t.CertFile}, {"client key", t.KeyFile}, {"CA", t.CAFile}} {
		if f.what != "CA" && t.CertFile == "" && t.KeyFile == "" {
			continue
		}
		if !filepath.IsAbs(f.path) {
			errs = append(errs, fmt.Errorf("xds tls: %s file %q must be an absolute path", f.what, f.path))
		}
	}
	if t.ServerName == "" {
		errs = append(errs, errors.New("xds tls: the control plane's server name is required"))
	}
	return errs
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
	if p.XDSTLS != nil {
		errs = append(errs, p.XDSTLS.validate()...)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("envoy bootstrap: %w", err)
	}
	return bootstrap.Execute(w, p)
}
