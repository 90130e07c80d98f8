// Command costmodel prices a show night and a million votes on AWS from the measured figures
// and list prices in params.json (or -params FILE): the NLB front door of infra/cloudformation
// beside API Gateway + ALB in front of the same fleets. Every input is a parameter; the
// prices are list prices to re-check (see the file's comment).
package main

import (
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

//go:embed params.json
var defaultParams []byte

func main() {
	path := flag.String("params", "", "parameter file (default: the embedded infra/costmodel/params.json)")
	flag.Parse()
	if err := run(*path, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "costmodel:", err)
		os.Exit(1)
	}
}

func run(path string, w io.Writer) error {
	data := defaultParams
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return err
		}
	}
	var p Params
	if err := json.Unmarshal(data, &p); err != nil {
		return fmt.Errorf("parameters: %w", err)
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("parameters: %w", err)
	}
	nlb, apigw := p.Estimate()
	fmt.Fprintf(w, "Show night: %.0f votes/s for %.0f min over %.0f regions (%.0f M votes), fleet billed %.1f h.\n",
		p.Show.PeakVotesPerSecond.Value, p.Show.PeakMinutes.Value, p.Show.Regions.Value, nlb.Votes/1e6, p.Show.BilledHours.Value)
	fmt.Fprintf(w, "Prices: AWS LIST PRICES, %s, %s. Re-check them before use.\n\n", p.Prices.Region, p.Prices.Date)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "cost\t%s\t%s\t\tsizing\n", nlb.FrontDoor, apigw.FrontDoor)
	for i, l := range nlb.Lines {
		if l.Front {
			continue
		}
		fmt.Fprintf(tw, "%s\t$%.2f\t$%.2f\t\t%s\n", l.Name, l.Cost, apigw.Lines[i].Cost, l.How)
	}
	for _, l := range nlb.Lines {
		if l.Front {
			fmt.Fprintf(tw, "%s\t$%.2f\t-\t\t%s\n", l.Name, l.Cost, l.How)
		}
	}
	for _, l := range apigw.Lines {
		if l.Front {
			fmt.Fprintf(tw, "%s\t-\t$%.2f\t\t%s\n", l.Name, l.Cost, l.How)
		}
	}
	fmt.Fprintf(tw, "show night\t$%.2f\t$%.2f\t\t\n", nlb.Total(), apigw.Total())
	fmt.Fprintf(tw, "per million votes\t$%.2f\t$%.2f\t\t\n", nlb.PerMillionVotes(), apigw.PerMillionVotes())
	return tw.Flush()
}
