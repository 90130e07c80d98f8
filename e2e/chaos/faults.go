package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/tvvote/voting/devstack"
)

// FaultEvent is what happened to one injected fault.
type FaultEvent struct {
	Fault
	// AtShare is the share of viewers with a final answer when the fault struck.
	AtShare float64
	// At is when it struck, from the start of the load.
	At time.Duration
	// InFlight is the number of viewers waiting for an answer when it struck.
	InFlight int64
	// Recovery is the time from the restart until the component was healthy again (0 for a freeze).
	Recovery time.Duration
	// DuringLoad says the load was still running when the component was back.
	DuringLoad bool
	// Err is a failed kill or restart: the stack is not trustworthy after it.
	Err error

	// For a failover: Failover is the time from the kill until every node saw every slot
	// served again (the replica promoted); Unavailable is the span from the first to the last
	// 503 the edge answered between the kill and the cluster's recovery, and Unavailable503
	// their number.
	Failover       time.Duration
	Unavailable    time.Duration
	Unavailable503 int
}

// strikeAt is the number of answered viewers at which fault i of k strikes: cfg.FaultAt of
// them for a single fault, evenly spread shares (1/(k+1), 2/(k+1), …) for several.
func strikeAt(cfg Config, i, k int) int64 {
	share := cfg.FaultAt
	if k > 1 {
		share = float64(i+1) / float64(k+1)
	}
	return int64(share * float64(cfg.Viewers))
}

// firstBudget is the load's budget before the first fault: the viewers it needs to reach the
// first strike with every client busy.
func firstBudget(cfg Config, faults []Fault) int {
	if len(faults) == 0 {
		return cfg.Viewers
	}
	return min(cfg.Viewers, int(strikeAt(cfg, 0, len(faults)))+cfg.Clients)
}

// injectFaults strikes each fault in turn while the load runs, each with every client busy:
// the load's budget stops new viewers one round of clients past the strike point, and the
// fault strikes when the answers reach it. While a fault lasts, new viewers trickle in
// (cfg.FaultRate per second at most, less when the viewers left must last for more faults),
// so the restart happens under load too; once the component is back, the budget moves on to
// the next strike point, or to every viewer after the last fault.
func injectFaults(ctx context.Context, s *devstack.Stack, e devstack.Election, faults []Fault, l *loader, cfg Config, log *slog.Logger) []FaultEvent {
	var events []FaultEvent
	start := time.Now()
	for i, f := range faults {
		for !l.over() && l.answered.Load() < l.budget.Load()-int64(cfg.Clients) {
			select {
			case <-ctx.Done():
				return events
			case <-time.After(5 * time.Millisecond):
			}
		}
		ev := FaultEvent{Fault: f, AtShare: float64(l.answered.Load()) / float64(cfg.Viewers),
			At: time.Since(start), InFlight: l.inflight.Load()}
		l.limit(trickle(cfg, f, cfg.Viewers-int(l.dispatched.Load()), len(faults)-i))
		l.budget.Store(int64(cfg.Viewers))
		if f.Kind == "failover" {
			ev.Err = failover(ctx, s, &ev, l, cfg)
		} else {
			ev.Recovery, ev.Err = strike(ctx, s, e, f, cfg)
		}
		if i+1 < len(faults) {
			l.budget.Store(min(int64(cfg.Viewers), max(l.dispatched.Load(), strikeAt(cfg, i+1, len(faults)))+int64(cfg.Clients)))
		}
		l.limit(0)
		ev.DuringLoad = !l.over()
		log.Info("fault", "fault", f.String(), "at", fmt.Sprintf("%.0f%%", 100*ev.AtShare), "inflight", ev.InFlight,
			"recovery", ev.Recovery.Round(time.Millisecond), "duringLoad", ev.DuringLoad, "err", ev.Err)
		events = append(events, ev)
	}
	l.budget.Store(int64(cfg.Viewers))
	return events
}

// trickle is the rate of new viewers while fault f lasts: cfg.FaultRate, or less so that at
// most a quarter of the viewers not yet started are spent per remaining fault, over the time
// the fault is expected to last (its down time and a second to come back).
func trickle(cfg Config, f Fault, notStarted, faultsLeft int) float64 {
	if cfg.FaultRate <= 0 {
		return 0
	}
	lasts := cfg.Down + time.Second
	if f.Kind == "freeze" {
		lasts = cfg.FreezeFor + time.Second
	}
	budget := float64(notStarted) / float64(faultsLeft) / 4
	return max(1, min(cfg.FaultRate, budget/lasts.Seconds()))
}

// failover kills a Redis Cluster primary and waits for its replica to take over, measuring
// how long that took and how long the edge answered 503 meanwhile; after cfg.Down the node
// restarts and rejoins as a replica, and Recovery is the time until its sync is done.
func failover(ctx context.Context, s *devstack.Stack, ev *FaultEvent, l *loader, cfg Config) error {
	if s.RedisCluster == nil {
		return fmt.Errorf("%s: the stack has no Redis Cluster (Config.RedisCluster)", ev.Fault)
	}
	primaries, err := s.RedisCluster.Primaries(ctx)
	if err != nil || len(primaries) == 0 {
		return fmt.Errorf("%s: no primary found: %v", ev.Fault, err)
	}
	node := devstack.ComponentRedisNode(primaries[0])
	killed := time.Now()
	if err := s.Kill(node); err != nil {
		return err
	}
	// The others mark it failed after the node timeout, then its replica is elected.
	for {
		if time.Since(killed) > time.Minute {
			return fmt.Errorf("%s: no replica took over %s within a minute", ev.Fault, node)
		}
		if p, err := s.RedisCluster.Primaries(ctx); err == nil && len(p) == 3 && !slices.Contains(p, primaries[0]) &&
			s.RedisCluster.WaitHealthy(ctx, 0) == nil {
			break
		}
		sleep(ctx, 50*time.Millisecond)
	}
	ev.Failover = time.Since(killed)
	// Answers in flight when the cluster recovered are let in for a second.
	sleep(ctx, time.Second)
	first, last, n := l.unavailableWithin(killed, killed.Add(ev.Failover+time.Second))
	ev.Unavailable, ev.Unavailable503 = last.Sub(first), n
	if rest := cfg.Down - time.Since(killed); rest > 0 {
		sleep(ctx, rest)
	}
	start := time.Now()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	if err := s.Restart(rctx, node); err != nil {
		return err
	}
	err = s.RedisCluster.WaitHealthy(rctx, time.Minute)
	if err == nil {
		err = s.RedisCluster.WaitReplicated(rctx, time.Minute)
	}
	ev.Recovery = time.Since(start)
	return err
}

// strike injects one fault through the stack's fault API and brings the component back;
// recovery is the time from the restart until it is healthy.
func strike(ctx context.Context, s *devstack.Stack, e devstack.Election, f Fault, cfg Config) (recovery time.Duration, err error) {
	switch f.Kind {
	case "freeze":
		if err := s.Freeze(f.Component); err != nil {
			return 0, err
		}
		sleep(context.WithoutCancel(ctx), cfg.FreezeFor) // never leave it stopped
		return 0, s.Thaw(f.Component)
	case "kill":
		if err := s.Kill(f.Component); err != nil {
			return 0, err
		}
		if sleep(ctx, cfg.Down); ctx.Err() != nil {
			return 0, ctx.Err()
		}
		start := time.Now()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		err := s.Restart(rctx, f.Component)
		if err == nil && f.Component == devstack.ComponentEnvoy {
			// Healthy is not enough for votes: the vote filter must have the election again.
			err = s.WaitEnvoyKnows(rctx, e.ID)
		}
		return time.Since(start), err
	}
	return 0, fmt.Errorf("unknown fault kind %q", f.Kind)
}
