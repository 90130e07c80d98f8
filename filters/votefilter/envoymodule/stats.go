package envoymodule

import (
	"time"

	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared"

	"github.com/tvvote/voting/filters/votefilter"
)

// stats are defined through the SDK, so they appear in Envoy's own /stats/prometheus beside
// its built-in ones. Values can only be recorded on a worker thread through a stream handle.
type stats struct {
	// requests has the tags outcome, reason and home_region: the region whose store decided,
	// "" before the viewer was known and on a single-region edge. With the region label every
	// edge's scrape target carries, the fleet's admissions, duplicates and rejections add up by
	// serving region and by home region in Prometheus.
	requests  shared.MetricID
	latencyMs shared.MetricID // admission latency, headers in → local reply out
	batchSize shared.MetricID // SQS SendMessageBatch sizes
	ok        bool
}

func defineStats(h shared.HttpFilterConfigHandle) stats {
	var s stats
	r1 := shared.MetricsSuccess
	s.requests, r1 = h.DefineCounter("votefilter_requests", "outcome", "reason", "home_region")
	var r2, r3 shared.MetricsResult
	s.latencyMs, r2 = h.DefineHistogram("votefilter_admission_latency_ms")
	s.batchSize, r3 = h.DefineHistogram("votefilter_enqueue_batch_size")
	s.ok = r1 == shared.MetricsSuccess && r2 == shared.MetricsSuccess && r3 == shared.MetricsSuccess
	return s
}

// record counts one answered request and drains batch sizes reported by the batcher
// goroutines, which cannot record themselves.
func (s stats) record(h shared.HttpFilterHandle, r votefilter.Response, took time.Duration) {
	if !s.ok || r.Outcome == "" {
		return
	}
	h.IncrementCounterValue(s.requests, 1, r.Outcome, r.Reason, r.HomeRegion)
	h.RecordHistogramValue(s.latencyMs, uint64(took.Milliseconds()))
	for i := 0; i < 4; i++ {
		select {
		case n := <-batchSizes:
			h.RecordHistogramValue(s.batchSize, uint64(n))
		default:
			return
		}
	}
}

// batchSizes carries batch sizes from the batchers to the next request that records stats.
// When nobody drains it fast enough, sizes are dropped rather than blocking a batch.
var batchSizes = make(chan int, 1024)

func reportBatch(n int) {
	select {
	case batchSizes <- n:
	default:
	}
}
