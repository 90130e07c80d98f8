package server

import "github.com/prometheus/client_golang/prometheus"

// metrics are what an operator watches to know the fleet has its config.
type metrics struct {
	streams      *prometheus.GaugeVec
	version      prometheus.Gauge
	elections    prometheus.Gauge
	nacks        *prometheus.CounterVec
	reloadErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xds_connected_streams",
			Help: "Open ADS streams, by the region of the Envoy node.",
		}, []string{"region"}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xds_snapshot_version",
			Help: "Version of the newest published snapshot; 0 until elections were first loaded.",
		}),
		elections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xds_elections",
			Help: "Elections in the newest published snapshot.",
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xds_nacks_total",
			Help: "Discovery requests in which an Envoy rejected a config, by resource type.",
		}, []string{"type_url"}),
		reloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xds_reload_errors_total",
			Help: "Failed loads of elections from the database; the last good set stays published.",
		}),
	}
	reg.MustRegister(m.streams, m.version, m.elections, m.nacks, m.reloadErrors)
	return m
}
