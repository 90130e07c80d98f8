package devstack

import (
	"os"

	"github.com/tvvote/voting/envoy"
)

func writeBootstrap(path string, p Ports, region string, xdsTLS *envoy.XDSTLS) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return envoy.RenderBootstrap(f, envoy.BootstrapParams{
		AdminPort: p.EnvoyAdmin, XDSPort: p.XDS, NodeID: "edge-" + region + "-" + itoa(p.Envoy), Region: region,
		XDSTLS: xdsTLS,
	})
}
