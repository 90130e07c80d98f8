// Command grafana writes the operators' Grafana dashboards — Live Voting, Vote Integrity,
// Infrastructure — to infra/grafana/dashboards/*.json (`go run ./infra/grafana`, or
// `make dashboards`). The JSON is committed, for import into any Grafana with a Prometheus data
// source; a test keeps it equal to this program's output and runs every panel's query against
// a live stack's Prometheus.
//
// The panels read the recording rules of infra/prometheus/voting.rules.yml where one exists, so
// a dashboard and the alert about the same thing show the same figure.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

func main() {
	out := flag.String("out", filepath.Join("infra", "grafana", "dashboards"), "folder the dashboards are written to")
	flag.Parse()
	files, err := render()
	if err == nil {
		err = os.MkdirAll(*out, 0o755)
	}
	for name, b := range files {
		if err != nil {
			break
		}
		err = os.WriteFile(filepath.Join(*out, name), b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dashboards:", err)
		os.Exit(1)
	}
}

// render builds every dashboard as the JSON file it is committed as, by file name.
func render() (map[string][]byte, error) {
	files := map[string][]byte{}
	for name, b := range map[string]*dashboard.DashboardBuilder{
		"live-voting.json":    liveVoting(),
		"vote-integrity.json": voteIntegrity(),
		"infrastructure.json": infrastructure(),
	} {
		d, err := b.Build()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		numberPanels(&d)
		j, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		files[name] = append(j, '\n')
	}
	return files, nil
}

// numberPanels gives every panel and row the unique id Grafana expects, in layout order.
func numberPanels(d *dashboard.Dashboard) {
	for i := range d.Panels {
		id := uint32(i + 1)
		switch p := d.Panels[i]; {
		case p.Panel != nil:
			p.Panel.Id = &id
		case p.RowPanel != nil:
			p.RowPanel.Id = id
		}
	}
}

// promDS is the data source every panel queries: the dashboard's ${datasource} variable, so
// the import asks for a Prometheus and nothing names one instance.
var promDS = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

// base is a dashboard with the data source and region variables every one of ours has.
func base(uid, title, description string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{"voting"}).
		Refresh("10s").
		Time("now-30m", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").
			Label("Data source").
			Type("prometheus")).
		WithVariable(dashboard.NewQueryVariableBuilder("region").
			Label("Region").
			Datasource(promDS).
			Query(dashboard.StringOrMap{String: cog.ToPtr("label_values(up, region)")}).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Multi(true).
			IncludeAll(true).
			AllValue(".*"))
}

// query is one PromQL target; legend names its series.
func query(expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().Datasource(promDS).Expr(expr).LegendFormat(legend).Range()
}

func targets(qs []*prometheus.DataqueryBuilder) []cog.Builder[variants.Dataquery] {
	out := make([]cog.Builder[variants.Dataquery], len(qs))
	for i, q := range qs {
		out[i] = q.RefId(string(rune('A' + i)))
	}
	return out
}

// graph is a time series panel; threshold, when not nil, is drawn as a red line (the alert's).
func graph(title, description, unit string, threshold *float64, qs ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(promDS).
		Unit(unit).
		Span(12).
		Height(8).
		Targets(targets(qs))
	if threshold != nil {
		p = p.Thresholds(redAbove(*threshold)).
			ThresholdsStyle(common.NewGraphThresholdsStyleConfigBuilder().Mode(common.GraphThresholdsStyleModeLine))
	}
	return p
}

// single is a stat panel showing the latest value; red from threshold on.
func single(title, description, unit string, threshold float64, qs ...*prometheus.DataqueryBuilder) *stat.PanelBuilder {
	return stat.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(promDS).
		Unit(unit).
		Span(6).
		Height(5).
		ColorMode(common.BigValueColorModeBackground).
		GraphMode(common.BigValueGraphModeArea).
		Thresholds(redAbove(threshold)).
		Targets(targets(qs))
}

func redAbove(v float64) *dashboard.ThresholdsConfigBuilder {
	return dashboard.NewThresholdsConfigBuilder().
		Mode(dashboard.ThresholdsModeAbsolute).
		Steps([]dashboard.Threshold{{Value: nil, Color: "green"}, {Value: cog.ToPtr(v), Color: "red"}})
}

// r is the region filter of the dashboard's variable.
const r = `region=~"$region"`

func liveVoting() *dashboard.DashboardBuilder {
	return base("voting-live", "Live Voting", "The show on air: traffic, votes, queue, latency, errors.").
		WithRow(dashboard.NewRowBuilder("Votes")).
		WithPanel(single("Votes accepted /s", "Votes answered 200 by the edge.", "reqps", 1e9,
			query(`sum(edge:votes_accepted:rate1m{`+r+`})`, "accepted"))).
		WithPanel(single("Votes persisted /s", "Votes the processors committed to PostgreSQL.", "reqps", 1e9,
			query(`sum(processor:votes_persisted:rate1m{`+r+`})`, "persisted"))).
		WithPanel(single("Edge 5xx share", "Alert EdgeErrorRateHigh above 0.1 %.", "percentunit", 0.001,
			query(`max(edge:requests_5xx:ratio_rate5m{`+r+`})`, "5xx"))).
		WithPanel(single("Oldest queued vote", "Alert VoteQueueBacklogOld above 30 s.", "s", 30,
			query(`max(sqs:oldest_message_age_seconds:max{`+r+`})`, "oldest"))).
		WithPanel(graph("Votes per second", "Accepted at the edge against persisted by the processors, per region.", "reqps", nil,
			query(`edge:votes_accepted:rate1m{`+r+`}`, "accepted {{region}}"),
			query(`processor:votes_persisted:rate1m{`+r+`}`, "persisted {{region}}"))).
		WithPanel(graph("Vote filter answers by outcome", "Every answer of the vote filter: accepted, duplicate, captcha_failed, rate_limited, …", "reqps", nil,
			query(`sum by (outcome) (edge:votefilter_requests:rate1m{`+r+`})`, "{{outcome}}"))).
		WithPanel(graph("Accepted by home region", "Votes accepted by the edges of the selected regions, by the viewer's home region whose store decided (multi-region fleets; one store: no label).", "reqps", nil,
			query(`sum by (region, home_region) (edge:votefilter_requests_by_home:rate1m{outcome="accepted",`+r+`})`, "{{region}} → {{home_region}}"))).
		WithRow(dashboard.NewRowBuilder("Edge")).
		WithPanel(graph("Requests per second", "Every request on the public listener, per region.", "reqps", nil,
			query(`edge:requests:rate1m{`+r+`}`, "{{region}}"))).
		WithPanel(graph("Answers by status class", "Public listener answers by status class.", "reqps", nil,
			query(`sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="ingress",`+r+`}[$__rate_interval]))`, "{{envoy_response_code_class}}xx"))).
		WithPanel(graph("Error rate (5xx share)", "Alert EdgeErrorRateHigh above 0.1 %.", "percentunit", cog.ToPtr(0.001),
			query(`edge:requests_5xx:ratio_rate5m{`+r+`}`, "{{region}}"))).
		WithPanel(graph("Vote admission p99", "Headers in to the filter's answer. Alert VoteAdmissionSlow above 150 ms.", "ms", cog.ToPtr(150.0),
			query(`edge:vote_admission_latency_ms:p99_5m{`+r+`}`, "{{region}}"))).
		WithRow(dashboard.NewRowBuilder("Queue and results")).
		WithPanel(graph("Queue depth", "Messages in the vote queue by state, and in the DLQ.", "short", nil,
			query(`max by (region, state) (voting_processor_queue_messages{`+r+`})`, "{{state}} {{region}}"),
			query(`sqs:dlq_messages:max{`+r+`}`, "dlq {{region}}"))).
		WithPanel(graph("Oldest queued vote", "Alert VoteQueueBacklogOld above 30 s.", "s", cog.ToPtr(30.0),
			query(`sqs:oldest_message_age_seconds:max{`+r+`}`, "{{region}}"))).
		WithPanel(graph("Results p99", "Results API reads (final, live, statistics). Alert ResultsSlow above 200 ms.", "s", cog.ToPtr(0.2),
			query(`results:request_duration_seconds:p99_5m{`+r+`}`, "{{region}}"))).
		WithPanel(graph("Vote to count p99", "Edge acceptedAt to the processor's commit, per persisted vote.", "s", nil,
			query(`histogram_quantile(0.99, sum by (region, le) (rate(voting_processor_vote_latency_seconds_bucket{`+r+`}[$__rate_interval])))`, "{{region}}")))
}

func voteIntegrity() *dashboard.DashboardBuilder {
	return base("voting-integrity", "Vote Integrity", "Every accepted vote counted once: accepted against persisted, DLQ, duplicates.").
		WithRow(dashboard.NewRowBuilder("Accepted against persisted")).
		WithPanel(single("Votes unaccounted", "Accepted, and neither persisted nor queued nor dead-lettered. Alert VoteLoss above 0 for 5 minutes.", "short", 1,
			query(`sum(votes:unaccounted{`+r+`})`, "unaccounted"))).
		WithPanel(single("DLQ messages", "Alert VotesDeadLettered above 0: replay once the cause is fixed (make replay-dlq).", "short", 1,
			query(`sum(sqs:dlq_messages:max{`+r+`})`, "dlq"))).
		WithPanel(single("Vote conflicts", "Votes answered 200 that PostgreSQL refused as a viewer's second vote (since the processors started). Alert VoteConflicts.", "short", 1,
			query(`sum(max by (region, instance) (voting_processor_vote_conflicts_total{`+r+`}))`, "conflicts"))).
		WithPanel(single("Since last reconciliation", "Alert ReconciliationStale above 2 minutes: the loss figure is stale.", "s", 120,
			query(`time() - max(voting_processor_reconciliation_last_success_timestamp_seconds{`+r+`})`, "age"))).
		WithPanel(graph("Accepted and persisted per election", "The edge store's count of viewers whose vote is queued or stored, and the votes rows.", "short", nil,
			query(`max by (election_id) (voting_processor_reconciliation_accepted_votes{`+r+`})`, "accepted {{election_id}}"),
			query(`max by (election_id) (voting_processor_reconciliation_persisted_votes{`+r+`})`, "persisted {{election_id}}"))).
		WithPanel(graph("Reconciliation gap per election", "Accepted minus persisted: the backlog plus anything lost; 0 once the queue drained.", "short", nil,
			query(`max by (election_id) (voting_processor_reconciliation_gap_votes{`+r+`})`, "{{election_id}}"),
			query(`votes:unaccounted{`+r+`}`, "unaccounted {{region}}"))).
		WithPanel(graph("Votes per second", "Accepted at the edge against persisted by the processors.", "reqps", nil,
			query(`sum(edge:votes_accepted:rate1m{`+r+`})`, "accepted"),
			query(`sum(processor:votes_persisted:rate1m{`+r+`})`, "persisted"))).
		WithRow(dashboard.NewRowBuilder("Duplicates and dead letters")).
		WithPanel(graph("Duplicate rejection rate", "Share of vote decisions at the edge answered 409 DUPLICATE_VOTE.", "percentunit", nil,
			query(`sum(edge:votefilter_requests:rate1m{outcome="duplicate",`+r+`}) / sum(edge:votefilter_requests:rate1m{outcome=~"accepted|duplicate",`+r+`})`, "duplicates"))).
		WithPanel(graph("Duplicates dropped by the processors", "Redelivered messages and second copies not inserted again (per second).", "reqps", nil,
			query(`sum(rate(voting_processor_duplicates_dropped_total{`+r+`}[$__rate_interval]))`, "duplicates dropped"))).
		WithPanel(graph("DLQ messages", "Messages in the dead-letter queue.", "short", cog.ToPtr(1.0),
			query(`sqs:dlq_messages:max{`+r+`}`, "{{region}}"))).
		WithPanel(graph("Poison messages by reason", "Messages handed back for dead-lettering, per receive.", "reqps", nil,
			query(`sum by (reason) (rate(voting_processor_poison_messages_total{`+r+`}[$__rate_interval]))`, "{{reason}}")))
}

func infrastructure() *dashboard.DashboardBuilder {
	// Our own processes; the exporters' process metrics describe the exporters, not the engines.
	const ours = `job=~"controlplane|processor|results|prometheus",`
	return base("voting-infrastructure", "Infrastructure", "Processes, PostgreSQL, Redis and the Envoy fleet.").
		WithRow(dashboard.NewRowBuilder("Processes")).
		WithPanel(graph("Process CPU", "CPU seconds per second of our processes.", "percentunit", nil,
			query(`sum by (job, instance) (rate(process_cpu_seconds_total{`+ours+r+`}[$__rate_interval]))`, "{{job}} {{instance}}"))).
		WithPanel(graph("Process memory", "Resident memory of our processes; Envoy's allocated heap.", "bytes", nil,
			query(`process_resident_memory_bytes{`+ours+r+`}`, "{{job}} {{instance}}"),
			query(`envoy_server_memory_allocated{`+r+`}`, "envoy {{instance}}"))).
		WithRow(dashboard.NewRowBuilder("PostgreSQL")).
		WithPanel(graph("PostgreSQL connections", "Backends in use against max_connections. Alert DatabaseConnectionsHigh above 80 %.", "short", nil,
			query(`sum by (instance) (pg_stat_database_numbackends{`+r+`})`, "in use {{instance}}"),
			query(`max by (instance) (pg_settings_max_connections{`+r+`})`, "max {{instance}}"))).
		WithPanel(graph("PostgreSQL transactions", "Commits and rollbacks per second.", "ops", nil,
			query(`sum by (instance) (rate(pg_stat_database_xact_commit{`+r+`}[$__rate_interval]))`, "commit {{instance}}"),
			query(`sum by (instance) (rate(pg_stat_database_xact_rollback{`+r+`}[$__rate_interval]))`, "rollback {{instance}}"))).
		WithPanel(graph("Vote batch commit p99", "BEGIN to COMMIT of the processors' batches. Alert DatabaseCommitSlow above 0.5 s.", "s", cog.ToPtr(0.5),
			query(`processor:batch_commit_seconds:p99_5m{`+r+`}`, "{{region}}"))).
		WithPanel(graph("Processor database up", "0 while batches fail and receiving is paused.", "short", nil,
			query(`voting_processor_database_up{`+r+`}`, "{{instance}}"))).
		WithRow(dashboard.NewRowBuilder("Redis")).
		WithPanel(graph("Redis memory", "Used memory and maxmemory (0 when unset).", "bytes", nil,
			query(`redis_memory_used_bytes{`+r+`}`, "used {{instance}}"),
			query(`redis_memory_max_bytes{`+r+`}`, "maxmemory (0: none) {{instance}}"))).
		WithPanel(graph("Redis memory used", "Of maxmemory, or of the machine's memory without it. Alert RedisMemoryHigh above 75 %.", "percentunit", cog.ToPtr(0.75),
			query(`redis:memory_used:ratio{`+r+`}`, "{{instance}}"))).
		WithRow(dashboard.NewRowBuilder("Envoy fleet")).
		WithPanel(graph("Envoys live", "Envoys serving (server.live) and attached to the control plane.", "short", nil,
			query(`sum by (region) (envoy_server_live{`+r+`})`, "live {{region}}"),
			query(`sum by (region) (xds_connected_envoys{`+r+`})`, "attached {{region}}"))).
		WithPanel(graph("Healthy upstream hosts", "Healthy members of each Envoy cluster (results worker, control plane, status).", "short", nil,
			query(`sum by (envoy_cluster_name) (envoy_cluster_membership_healthy{`+r+`})`, "{{envoy_cluster_name}}"))).
		WithPanel(graph("Scrape targets up", "1 per component Prometheus reaches. Alert TargetDown.", "short", nil,
			query(`sum by (job) (up{`+r+`})`, "{{job}}"))).
		WithPanel(graph("Config versions", "Newest snapshot against what each Envoy acknowledged.", "short", nil,
			query(`max(xds_snapshot_version{`+r+`})`, "published"),
			query(`min by (node) (xds_node_config_version{`+r+`})`, "{{node}}")))
}
