package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// small is a show night whose costs are worked out by hand below.
func small(t *testing.T) Params {
	t.Helper()
	var p Params
	if err := json.Unmarshal(defaultParams, &p); err != nil {
		t.Fatal(err)
	}
	m, s, pr := &p.Measured, &p.Show, &p.Prices
	m.EnvoyCPUMicrosPerVote.Value = 250 // 1000 votes/s/region → 0.25 cores
	m.RedisCallsPerVote.Value = 2
	m.RedisVotesPerSecondPerPrimary.Value = 400 // → 3 shards
	m.SQSSendBatchFill.Value, m.SQSReceiveBatchFill.Value, m.SQSDeleteBatchFill.Value = 10, 5, 10
	m.ProcessorCPUMicrosPerVote.Value = 100
	m.WebSocketKiBPerClient.Value = 1024
	s.PeakVotesPerSecond.Value, s.PeakMinutes.Value, s.Regions.Value, s.BilledHours.Value = 2000, 30, 2, 2
	s.LiveResultsClients.Value = 2 * 1024 * 8 // 8 GiB per region
	s.EdgeCPUTarget.Value, s.WorkerCPUTarget.Value, s.MinEdgeInstancesPerRegion.Value = 0.5, 0.5, 3
	s.BytesOutPerVote.Value, s.NewTLSConnectionsPerVote.Value, s.DNSQueriesPerVote.Value, s.BytesPerQueuedVote.Value = 1e3, 1, 1, 1e3
	pr.EdgeInstanceHour.Value, pr.EdgeInstanceVCPUs.Value = 1, 4
	pr.WorkerInstanceHour.Value, pr.WorkerInstanceVCPUs.Value, pr.WorkerInstanceGiB.Value = 1, 2, 8
	pr.RedisNodeHour.Value, pr.RedisReplicasPerShard.Value = 1, 1
	pr.SQSPerMillionRequests.Value = 1
	pr.NLBHour.Value, pr.NLCUHour.Value, pr.NLBTLSNewConnectionsPerLCU.Value = 1, 1, 100
	pr.ALBHour.Value, pr.ALBLCUHour.Value, pr.ALBNewConnectionsPerLCU.Value, pr.ALBRuleEvaluationsPerLCU.Value = 1, 1, 25, 100
	pr.APIGatewayPerMillion.Value, pr.WAFPerMillion.Value = 1, 1
	pr.DataOutPerGB.Value, pr.EndpointPerGB.Value, pr.EndpointHourPerAZ.Value, pr.NATHour.Value = 1, 1, 1, 1
	pr.Route53LatencyPerMillion.Value = 1
	pr.RDSHour.Value, pr.RDSReplicaHour.Value, pr.RDSReplicas.Value = 1, 1, 1
	return p
}

func TestEstimateArithmetic(t *testing.T) {
	p := small(t)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	nlb, apigw := p.Estimate()
	const votes = 2000 * 30 * 60.0 // 3.6 M
	want := map[string]float64{
		"edge fleet (EC2)":              3 * 2 * 1 * 2,     // the minimum of 3 beats 0.25 cores
		"Redis (ElastiCache)":           3 * 2 * 2 * 1 * 2, // 3 shards × 2 nodes × 2 regions × 2 h
		"SQS requests":                  votes * (0.1 + 0.2 + 0.1) / 1e6,
		"processor (EC2)":               1 * 2 * 1 * 2,       // 0.1 cores: one instance
		"results + control plane (EC2)": (2 + 1) * 2 * 1 * 2, // 8 GiB / (8 GiB × 0.5) = 2, +1
		"PostgreSQL (RDS)":              (1 + 1) * 2,
		"data out to viewers":           votes * 1e3 / 1e9,
		"SQS endpoint + NAT":            votes*1e3/1e9 + 2*3*(1+1)*2,
		"Route 53 latency queries":      votes / 1e6,
		"NLB":                           2 * (1*2 + 10*1*0.5), // 1000 new conns/s / 100 = 10 NLCU for half an hour
		"API Gateway":                   votes / 1e6,
		"ALB":                           2 * (1*2 + 10*1*0.5),
		"WAF":                           votes / 1e6,
	}
	var total float64
	for _, e := range []Estimate{nlb, apigw} {
		for _, l := range e.Lines {
			w, ok := want[l.Name]
			if !ok {
				t.Errorf("%s: unexpected line %q", e.FrontDoor, l.Name)
				continue
			}
			if math.Abs(l.Cost-w) > 1e-9 {
				t.Errorf("%s: %s = %g, want %g (%s)", e.FrontDoor, l.Name, l.Cost, w, l.How)
			}
		}
	}
	for _, l := range nlb.Lines {
		total += l.Cost
	}
	if math.Abs(nlb.Total()-total) > 1e-9 || math.Abs(nlb.PerMillionVotes()-total/3.6) > 1e-9 {
		t.Errorf("total %g, per million %g; want %g, %g", nlb.Total(), nlb.PerMillionVotes(), total, total/3.6)
	}
	// Same fleets; API Gateway and WAF per request, and here the ALB costs what the NLB does.
	if d := apigw.Total() - nlb.Total(); math.Abs(d-2*votes/1e6) > 1e-9 {
		t.Errorf("API Gateway path costs %g more, want %g", d, 2*votes/1e6)
	}
}

func TestValidateRefusesZeroDivisors(t *testing.T) {
	p := small(t)
	p.Measured.SQSSendBatchFill.Value = 0
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "sqsSendBatchFill") {
		t.Errorf("Validate = %v, want a complaint about sqsSendBatchFill", err)
	}
}

// TestDefaultParams: the shipped file parses, every figure says where it comes from, and the
// report prints both front doors.
func TestDefaultParams(t *testing.T) {
	var p Params
	dec := json.NewDecoder(bytes.NewReader(defaultParams))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatal(err)
	}
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal(defaultParams, &struct {
		M *map[string]map[string]json.RawMessage
	}{&raw}); err != nil {
		t.Fatal(err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(defaultParams, &all); err != nil {
		t.Fatal(err)
	}
	for _, group := range []string{"measured", "show", "prices"} {
		var figs map[string]json.RawMessage
		if err := json.Unmarshal(all[group], &figs); err != nil {
			t.Fatal(err)
		}
		for name, v := range figs {
			var f Figure
			if json.Unmarshal(v, &f) != nil {
				continue // date, region
			}
			if f.Source == "" || f.Unit == "" {
				t.Errorf("%s.%s has no unit or source", group, name)
			}
			if group == "measured" && !strings.Contains(f.Source, "BENCHMARKS.md") {
				t.Errorf("measured.%s does not name its BENCHMARKS.md section", name)
			}
			if group == "prices" && !strings.Contains(f.Source, "LIST PRICE") && !strings.Contains(f.Unit, "vCPU") &&
				!strings.Contains(f.Unit, "GiB") && !strings.Contains(f.Unit, "replicas") {
				t.Errorf("prices.%s is not marked as a list price to re-check", name)
			}
		}
	}
	var out bytes.Buffer
	if err := run("", &out); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"LIST PRICES", "per million votes", "NLB", "API Gateway"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, out.String())
		}
	}
}
