package server

import "github.com/prometheus/client_golang/prometheus"

// metrics are what an operator watches to know the fleet has its config.
type metrics struct {
	streams      *prometheus.GaugeVec
	nodes        *prometheus.GaugeVec
	version      prometheus.Gauge
	nodeVersion  *prometheus.GaugeVec
	pushLatency  *prometheus.HistogramVec
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
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xds_connected_envoys",
			Help: "Envoy nodes with at least one open ADS stream, by region.",
		}, []string{"region"}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xds_snapshot_version",
			Help: "Version of the newest published snapshot; 0 until the state was first loaded.",
		}),
		nodeVersion: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xds_node_config_version",
			Help: "Version each connected Envoy last acknowledged, by resource type; compare with xds_snapshot_version.",
		}, []string{"node", "region", "type"}),
		pushLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "xds_push_latency_seconds",
			Help: "Time from publishing a version to an Envoy's ACK of it, by resource type.",
			// Pushes should take milliseconds; the tail shows slow or overloaded edges.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"type"}),
		elections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xds_elections",
			Help: "Elections in the newest published snapshot.",
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xds_nacks_total",
			Help: "Discovery requests in which an Envoy rejected a config, by resource type and region.",
		}, []string{"type_url", "region"}),
		reloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xds_reload_errors_total",
			Help: "Failed loads or rejected states from the database; the last good state stays published.",
		}),
	}
	reg.MustRegister(m.streams, m.nodes, m.version, m.nodeVersion, m.pushLatency, m.elections, m.nacks, m.reloadErrors)
	return m
}
