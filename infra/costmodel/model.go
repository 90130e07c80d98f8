package main

import (
	"fmt"
	"math"
)

// Figure is one input: its value, its unit and where it comes from.
type Figure struct {
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Source string  `json:"source"`
}

// Params are the model's inputs (params.json): measured figures, the show night's shape, prices.
type Params struct {
	Comment  string `json:"comment"`
	Measured struct {
		EnvoyCPUMicrosPerVote         Figure `json:"envoyCpuMicrosPerVote"`
		RedisCallsPerVote             Figure `json:"redisCallsPerVote"`
		RedisVotesPerSecondPerPrimary Figure `json:"redisVotesPerSecondPerPrimary"`
		SQSSendBatchFill              Figure `json:"sqsSendBatchFill"`
		SQSReceiveBatchFill           Figure `json:"sqsReceiveBatchFill"`
		SQSDeleteBatchFill            Figure `json:"sqsDeleteBatchFill"`
		ProcessorCPUMicrosPerVote     Figure `json:"processorCpuMicrosPerVote"`
		WebSocketKiBPerClient         Figure `json:"websocketKiBPerClient"`
	} `json:"measured"`
	Show struct {
		PeakVotesPerSecond        Figure `json:"peakVotesPerSecond"`
		PeakMinutes               Figure `json:"peakMinutes"`
		Regions                   Figure `json:"regions"`
		BilledHours               Figure `json:"billedHours"`
		LiveResultsClients        Figure `json:"liveResultsClients"`
		EdgeCPUTarget             Figure `json:"edgeCpuTarget"`
		WorkerCPUTarget           Figure `json:"workerCpuTarget"`
		MinEdgeInstancesPerRegion Figure `json:"minEdgeInstancesPerRegion"`
		BytesOutPerVote           Figure `json:"bytesOutPerVote"`
		NewTLSConnectionsPerVote  Figure `json:"newTlsConnectionsPerVote"`
		DNSQueriesPerVote         Figure `json:"dnsQueriesPerVote"`
		BytesPerQueuedVote        Figure `json:"bytesPerQueuedVote"`
	} `json:"show"`
	Prices struct {
		Date                       string `json:"date"`
		Region                     string `json:"region"`
		EdgeInstanceHour           Figure `json:"edgeInstanceHour"`
		EdgeInstanceVCPUs          Figure `json:"edgeInstanceVcpus"`
		WorkerInstanceHour         Figure `json:"workerInstanceHour"`
		WorkerInstanceVCPUs        Figure `json:"workerInstanceVcpus"`
		WorkerInstanceGiB          Figure `json:"workerInstanceGiB"`
		RedisNodeHour              Figure `json:"redisNodeHour"`
		RedisReplicasPerShard      Figure `json:"redisReplicasPerShard"`
		SQSPerMillionRequests      Figure `json:"sqsPerMillionRequests"`
		NLBHour                    Figure `json:"nlbHour"`
		NLCUHour                   Figure `json:"nlcuHour"`
		NLBTLSNewConnectionsPerLCU Figure `json:"nlbTlsNewConnectionsPerLcu"`
		ALBHour                    Figure `json:"albHour"`
		ALBLCUHour                 Figure `json:"albLcuHour"`
		ALBNewConnectionsPerLCU    Figure `json:"albNewConnectionsPerLcu"`
		ALBRuleEvaluationsPerLCU   Figure `json:"albRuleEvaluationsPerLcu"`
		APIGatewayPerMillion       Figure `json:"apiGatewayPerMillion"`
		WAFPerMillion              Figure `json:"wafPerMillion"`
		DataOutPerGB               Figure `json:"dataOutPerGB"`
		EndpointPerGB              Figure `json:"endpointPerGB"`
		EndpointHourPerAZ          Figure `json:"endpointHourPerAz"`
		NATHour                    Figure `json:"natHour"`
		Route53LatencyPerMillion   Figure `json:"route53LatencyPerMillion"`
		RDSHour                    Figure `json:"rdsHour"`
		RDSReplicaHour             Figure `json:"rdsReplicaHour"`
		RDSReplicas                Figure `json:"rdsReplicas"`
	} `json:"prices"`
}

// zones is the VPC's availability zones per region (nested/vpc.yaml): one NAT gateway and one
// endpoint interface each.
const zones = 3

// Line is one cost of a show night.
type Line struct {
	Name  string
	How   string // the sizing behind it
	Cost  float64
	Front bool // a cost of the front door, which the two designs price differently
}

// Estimate is a show night priced for one front door.
type Estimate struct {
	FrontDoor string
	Votes     float64
	Lines     []Line
}

// Total is the show night's cost in dollars.
func (e Estimate) Total() float64 {
	var t float64
	for _, l := range e.Lines {
		t += l.Cost
	}
	return t
}

// PerMillionVotes is the show night's cost spread over its votes.
func (e Estimate) PerMillionVotes() float64 { return e.Total() / e.Votes * 1e6 }

// Validate refuses inputs the arithmetic would divide by or that cannot be.
func (p *Params) Validate() error {
	for name, f := range map[string]Figure{
		"envoyCpuMicrosPerVote": p.Measured.EnvoyCPUMicrosPerVote, "redisVotesPerSecondPerPrimary": p.Measured.RedisVotesPerSecondPerPrimary,
		"sqsSendBatchFill": p.Measured.SQSSendBatchFill, "sqsReceiveBatchFill": p.Measured.SQSReceiveBatchFill,
		"sqsDeleteBatchFill": p.Measured.SQSDeleteBatchFill, "peakVotesPerSecond": p.Show.PeakVotesPerSecond,
		"peakMinutes": p.Show.PeakMinutes, "regions": p.Show.Regions, "billedHours": p.Show.BilledHours,
		"edgeCpuTarget": p.Show.EdgeCPUTarget, "workerCpuTarget": p.Show.WorkerCPUTarget,
		"edgeInstanceVcpus": p.Prices.EdgeInstanceVCPUs, "workerInstanceVcpus": p.Prices.WorkerInstanceVCPUs,
		"workerInstanceGiB": p.Prices.WorkerInstanceGiB, "nlbTlsNewConnectionsPerLcu": p.Prices.NLBTLSNewConnectionsPerLCU,
		"albNewConnectionsPerLcu": p.Prices.ALBNewConnectionsPerLCU, "albRuleEvaluationsPerLcu": p.Prices.ALBRuleEvaluationsPerLCU,
	} {
		if !(f.Value > 0) {
			return fmt.Errorf("%s must be above 0, got %g", name, f.Value)
		}
	}
	if p.Show.EdgeCPUTarget.Value > 1 || p.Show.WorkerCPUTarget.Value > 1 {
		return fmt.Errorf("CPU targets are fractions (0..1]")
	}
	return nil
}

// Estimate prices a show night with the NLB front door (the deployment in infra/cloudformation)
// and with the alternative, API Gateway + ALB, in front of the same fleets.
func (p *Params) Estimate() (nlb, apigw Estimate) {
	m, s, pr := p.Measured, p.Show, p.Prices
	regions := s.Regions.Value
	hours := s.BilledHours.Value
	peakHours := s.PeakMinutes.Value / 60
	votes := s.PeakVotesPerSecond.Value * s.PeakMinutes.Value * 60
	perRegion := s.PeakVotesPerSecond.Value / regions

	// Shared by both designs: the fleets behind the front door and the data path.
	edgeCores := perRegion * m.EnvoyCPUMicrosPerVote.Value / 1e6
	edgeInstances := math.Max(s.MinEdgeInstancesPerRegion.Value,
		math.Ceil(edgeCores/(pr.EdgeInstanceVCPUs.Value*s.EdgeCPUTarget.Value)))
	shards := math.Ceil(perRegion / m.RedisVotesPerSecondPerPrimary.Value)
	nodes := shards * (1 + pr.RedisReplicasPerShard.Value)
	sqsPerVote := 1/m.SQSSendBatchFill.Value + 1/m.SQSReceiveBatchFill.Value + 1/m.SQSDeleteBatchFill.Value
	procCores := perRegion * m.ProcessorCPUMicrosPerVote.Value / 1e6
	procInstances := math.Max(1, math.Ceil(procCores/(pr.WorkerInstanceVCPUs.Value*s.WorkerCPUTarget.Value)))
	wsGiB := s.LiveResultsClients.Value * m.WebSocketKiBPerClient.Value / (1024 * 1024) / regions
	// Memory held to the same headroom as CPU; one more instance for the control plane.
	resultsInstances := math.Max(1, math.Ceil(wsGiB/(pr.WorkerInstanceGiB.Value*s.WorkerCPUTarget.Value))) + 1
	shared := []Line{
		{"edge fleet (EC2)", fmt.Sprintf("%.0f instances/region: %.1f cores at %.0f µs/vote, %.0f %% target",
			edgeInstances, edgeCores, m.EnvoyCPUMicrosPerVote.Value, s.EdgeCPUTarget.Value*100),
			edgeInstances * regions * pr.EdgeInstanceHour.Value * hours, false},
		{"Redis (ElastiCache)", fmt.Sprintf("%.0f shards × %.0f nodes/region: %.0f calls/s/region at %.0f calls/vote",
			shards, 1+pr.RedisReplicasPerShard.Value, perRegion*m.RedisCallsPerVote.Value, m.RedisCallsPerVote.Value),
			nodes * regions * pr.RedisNodeHour.Value * hours, false},
		{"SQS requests", fmt.Sprintf("%.2f requests/vote (send, receive, delete batches)", sqsPerVote),
			votes * sqsPerVote * pr.SQSPerMillionRequests.Value / 1e6, false},
		{"processor (EC2)", fmt.Sprintf("%.0f instances/region: %.1f cores at %.0f µs/vote", procInstances, procCores, m.ProcessorCPUMicrosPerVote.Value),
			procInstances * regions * pr.WorkerInstanceHour.Value * hours, false},
		{"results + control plane (EC2)", fmt.Sprintf("%.0f instances/region: %.1f GiB of streams/region at %.0f KiB/client",
			resultsInstances, wsGiB, m.WebSocketKiBPerClient.Value),
			resultsInstances * regions * pr.WorkerInstanceHour.Value * hours, false},
		{"PostgreSQL (RDS)", fmt.Sprintf("primary Multi-AZ + %.0f replicas, %.1f h", pr.RDSReplicas.Value, hours),
			(pr.RDSHour.Value + pr.RDSReplicas.Value*pr.RDSReplicaHour.Value) * hours, false},
		{"data out to viewers", fmt.Sprintf("%.0f bytes/vote", s.BytesOutPerVote.Value),
			votes * s.BytesOutPerVote.Value / 1e9 * pr.DataOutPerGB.Value, false},
		{"SQS endpoint + NAT", fmt.Sprintf("%d zones/region, %.0f bytes/vote", zones, s.BytesPerQueuedVote.Value),
			votes*s.BytesPerQueuedVote.Value/1e9*pr.EndpointPerGB.Value +
				regions*zones*(pr.EndpointHourPerAZ.Value+pr.NATHour.Value)*hours, false},
		{"Route 53 latency queries", fmt.Sprintf("%.1f queries/vote", s.DNSQueriesPerVote.Value),
			votes * s.DNSQueriesPerVote.Value * pr.Route53LatencyPerMillion.Value / 1e6, false},
	}

	newConns := perRegion * s.NewTLSConnectionsPerVote.Value
	nlcu := newConns / pr.NLBTLSNewConnectionsPerLCU.Value
	nlb = Estimate{FrontDoor: "NLB (TLS, PROXY protocol)", Votes: votes, Lines: append(append([]Line{}, shared...),
		Line{"NLB", fmt.Sprintf("%.0f NLCU/region at peak (%.0f new TLS connections/s)", nlcu, newConns),
			regions * (pr.NLBHour.Value*hours + nlcu*pr.NLCUHour.Value*peakHours), true})}

	// API Gateway terminates the viewers' TLS and reuses its connections to the ALB, so the
	// ALB's LCUs follow its rule evaluations (one per request).
	albLCU := perRegion / pr.ALBRuleEvaluationsPerLCU.Value
	apigw = Estimate{FrontDoor: "API Gateway (HTTP API) + ALB + WAF", Votes: votes, Lines: append(append([]Line{}, shared...),
		Line{"API Gateway", "per request", votes * pr.APIGatewayPerMillion.Value / 1e6, true},
		Line{"ALB", fmt.Sprintf("%.0f LCU/region at peak", albLCU),
			regions * (pr.ALBHour.Value*hours + albLCU*pr.ALBLCUHour.Value*peakHours), true},
		Line{"WAF", "per request", votes * pr.WAFPerMillion.Value / 1e6, true})}
	return nlb, apigw
}
