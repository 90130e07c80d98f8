// Command devstack is `make run`: it starts the whole product on loopback (PostgreSQL, Redis,
// ElasticMQ, the control plane, Envoy with the vote filter, processor, results worker and the
// development identity provider), seeds a demo election and prints how to vote. Ctrl-C stops
// everything, as does a component dying on its own. `devstack captcha` prints a solved
// proof-of-work captchaToken from the running stack's edge. `devstack -captcha off -no-limits`
// is the stack for load tests (loadtest/k6, loadtest/k6run).
//
// The running stack can be broken by hand through its control endpoint (127.0.0.1:18009):
// `devstack components` lists the components and their state, `devstack kill|restart|freeze|thaw
// <component>` injects a fault. A component killed that way does not stop the stack.
// `devstack demo` seeds a fresh open demo election on the running stack (after the first one
// was closed or cancelled) and prints how to vote in it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/filters/votefilter/captcha"
)

// demoViewer is a fixed viewer id, so running the printed vote command twice shows the 409.
const demoViewer = "3f1e2d4c-5b6a-4789-8abc-def012345678"

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "devstack")
	if len(os.Args) > 1 && os.Args[1] == "captcha" {
		if err := printSolvedCaptcha(); err != nil {
			log.Error("captcha", "err", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "demo" {
		if err := demo(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && (os.Args[1] == "components" || slices.Contains(devstack.ControlActions, os.Args[1])) {
		if err := control(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run(log))
}

// run is the supervisor of `make run`; it returns the exit code once the stack has stopped.
func run(log *slog.Logger) int {
	captchaMode := flag.String("captcha", "pow", `captcha mode of the edge: "pow", or "off" for load tests only`)
	noLimits := flag.Bool("no-limits", false, "disable the per-viewer and per-IP rate limits (load tests only)")
	redisCluster := flag.Bool("redis-cluster", false, "put the edge's admission store on a local Redis Cluster (3 primaries, 3 replicas)")
	traceSampling := flag.Float64("trace-sampling", 100, "percent of edge requests Envoy traces into Jaeger (locally all; the control plane's default is 1)")
	plainXDS := flag.Bool("xds-plaintext", false, "serve ADS without mutual TLS (default: a throwaway CA under .state/pki)")
	regions := flag.String("regions", "", `a multi-region stack, e.g. "eu-west-1,us-east-1": the second region gets its own Envoy (8090), Redis (56390), queue and processor`)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	opts := devstack.Options{Ports: devstack.DefaultPorts, Region: "eu-west-1", CaptchaMode: *captchaMode,
		RedisCluster: *redisCluster, XDSMutualTLS: !*plainXDS}
	if *regions != "" {
		opts.Regions = strings.Split(*regions, ",")
	}
	if *noLimits {
		opts.ControlPlaneEnv = []string{"XDS_RATE_PER_VIEWER=0/1s", "XDS_RATE_PER_IP=0/1s"}
	}
	opts.Tracing = true
	opts.ControlPlaneEnv = append(opts.ControlPlaneEnv, fmt.Sprintf("XDS_TRACING_SAMPLING=%g", *traceSampling))
	// Bound before the stack starts, so a second `make run` fails at once.
	ctl, err := net.Listen("tcp", devstack.DefaultControlAddr)
	if err != nil {
		log.Error("control endpoint", "err", err)
		return 1
	}
	defer ctl.Close()
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	s, err := devstack.Start(startCtx, opts)
	cancel()
	if err != nil {
		log.Error("stack failed to start", "err", err)
		return 1
	}
	defer s.Stop()
	ctlSrv := &http.Server{Handler: controlMux(s), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = ctlSrv.Serve(ctl) }()
	defer ctlSrv.Close()

	e, err := seedDemo(ctx, s)
	if err != nil {
		log.Error("demo election not ready", "err", err)
		return 1
	}
	printHowTo(os.Stdout, s, e)

	select {
	case <-ctx.Done():
		fmt.Println("\nstopping…")
		return 0
	case name := <-s.Exited():
		log.Error("component exited on its own; stopping the stack", "name", name, "log", s.LogPath(name))
		return 1
	}
}

// controlMux is the control endpoint of `make run`: the stack's fault API, and POST /demo for
// a fresh demo election.
func controlMux(s *devstack.Stack) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", s.ControlHandler())
	mux.HandleFunc("POST /demo", func(w http.ResponseWriter, r *http.Request) {
		e, err := seedDemo(r.Context(), s)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		printHowTo(w, s, e)
	})
	return mux
}

// seedDemo writes an open demo election and waits until Envoy admits votes for it.
func seedDemo(ctx context.Context, s *devstack.Stack) (devstack.Election, error) {
	e, err := s.SeedElection(ctx, "Demo: Song of the Night", 24*time.Hour, "Aurora Lights", "Blue Harbour", "Copper Foxes")
	if err == nil {
		err = s.WaitEnvoyKnows(ctx, e.ID)
	}
	return e, err
}

// demo asks the running stack for a fresh demo election and prints how to vote in it.
func demo() error {
	resp, err := http.Post("http://"+devstack.DefaultControlAddr+"/demo", "", nil)
	if err != nil {
		return fmt.Errorf("no stack answers at %s (is `make run` running?): %w", devstack.DefaultControlAddr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("demo: %s", strings.TrimSpace(string(body)))
	}
	fmt.Print(string(body))
	return nil
}

// self is this program's absolute path, so the printed command lines work from any folder.
func self() string {
	exe, err := os.Executable()
	if err != nil {
		return "bin/devstack"
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return exe
}

// control sends `components` or `<action> <component>` to the running stack's control endpoint.
func control(args []string) error {
	action, component := args[0], ""
	if action != "components" {
		if len(args) != 2 {
			return fmt.Errorf("usage: devstack %s <component>   (components: devstack components)", action)
		}
		component = args[1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := devstack.Control(ctx, devstack.DefaultControlAddr, action, component)
	if err != nil {
		return err
	}
	fmt.Print(out)
	return nil
}

func printHowTo(w io.Writer, s *devstack.Stack, e devstack.Election) {
	fmt.Fprintf(w, `
The voting stack is up. Demo election %q (%s).
Candidates:
`, e.Title, e.ID)
	for _, c := range e.Candidates {
		fmt.Fprintf(w, "  %-14s %s\n", c.Name, c.ID)
	}
	fmt.Fprintf(w, `
Vote as the demo viewer (run it twice: the second answer is 409 DUPLICATE_VOTE):

  curl -s -X POST %[1]s/api/v1/votes \
    -H "Authorization: Bearer $(curl -s '%[2]s/token?sub=%[3]s')" \
    -H 'Content-Type: application/json' \
    -d '{"electionId":"%[4]s","candidateId":"%[5]s","captchaToken":"'"$(%[16]s captcha)"'"}'; echo

The vote needs a solved captcha: the line above uses `+"`devstack captcha`"+`, which fetches a
challenge from the edge and solves it as a viewer's app would.

Read the results:

  curl -s %[1]s/api/v1/results/%[4]s; echo
  curl -s %[1]s/api/v1/results/live/%[4]s; echo

Live results page for the on-air screen (open in a browser):

  echo "%[1]s/api/v1/results/page/%[4]s?token=$(curl -s '%[2]s/token?sub=studio-screen')"

Break it by hand (crash, hang, recover); a component killed this way does not stop the stack:

  %[16]s components       # %[14]s
  %[16]s kill redis         # SIGKILL, as a crash
  %[16]s restart redis      # same ports and data; returns once healthy
  %[16]s freeze processor   # SIGSTOP: sockets stay open, nothing answers
  %[16]s thaw processor

A fresh open demo election (after this one was closed or cancelled): %[16]s demo

Ports: envoy %[6]d (admin %[7]d), control plane %[8]d (admin API 18001), results %[9]d, dev IdP %[10]d,
postgres %[11]d, redis %[12]d, sqs (ElasticMQ) %[13]d, processor metrics 18003, devstack control %[15]s.
Logs: .state/logs/ (restarts append); data: .state/data/. Ctrl-C stops everything.
`, s.EnvoyURL(), s.IdPURL(), demoViewer, e.ID, e.Candidates[0].ID,
		s.Ports.Envoy, s.Ports.EnvoyAdmin, s.Ports.XDS, s.Ports.Results, s.Ports.IdP,
		s.Ports.Postgres, s.Ports.Redis, s.Ports.SQS, strings.Join(s.Components(), " "), devstack.DefaultControlAddr, self())
	fmt.Fprintln(w, s.MonitoringLine())
	fmt.Fprintln(w, s.TracingLine())
	if s.RedisCluster != nil {
		fmt.Fprintf(w, "Edge store: Redis Cluster %s (3 primaries, 3 replicas; results worker on redis %d).\n"+
			"Fail a primary: %s kill redis-node-N (see redis-cli -p PORT cluster nodes), then restart it.\n",
			s.RedisCluster.Seeds(), s.Ports.Redis, self())
	}
	for _, r := range s.Peers {
		fmt.Fprintf(w, "Region %s: envoy %s (admin %d), redis %s, queue %s, processor metrics %s.\n"+
			"The same curl lines work against it: a viewer is admitted once, in their home region's store, whichever region they use.\n",
			r.Name, r.URL(), r.AdminPort, r.Redis.Addr, r.QueueURL, r.ProcessorMetricsURL())
	}
}

// printSolvedCaptcha fetches a proof-of-work challenge from the local edge and prints the
// solved captchaToken, as a viewer's app would compute it.
func printSolvedCaptcha() error {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/votes/challenge", devstack.DefaultPorts.Envoy))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var c captcha.Challenge
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("challenge: HTTP %d %v", resp.StatusCode, err)
	}
	fmt.Print(captcha.Solve(c.Challenge, c.Difficulty))
	return nil
}
