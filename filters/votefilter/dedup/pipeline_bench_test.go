package dedup

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// BenchmarkPipelining compares the client's pipelining settings by the client's own CPU per
// admitted vote (reservation + confirmation, 64 in flight), to tune NewClient. Connections
// are 2^multiplex (-1: one); a flush delay lets a connection gather more commands per write.
//
//	go test -run '^$' -bench Pipelining -benchtime 20000x ./filters/votefilter/dedup/
func BenchmarkPipelining(b *testing.B) {
	var addr string
	for a := range client.Nodes() {
		addr = a
	}
	var n atomic.Int64
	for _, v := range []struct {
		name      string
		multiplex int
		delay     time.Duration
	}{
		{"4conns", 2, 0}, {"2conns", 1, 0}, {"1conn", -1, 0},
		{"4conns-flush20us", 2, 20 * time.Microsecond}, {"2conns-flush20us", 1, 20 * time.Microsecond},
		{"1conn-flush20us", -1, 20 * time.Microsecond}, {"1conn-flush50us", -1, 50 * time.Microsecond},
	} {
		b.Run(v.name, func(b *testing.B) {
			opt := base([]string{addr})
			opt.ForceSingleClient = true
			opt.PipelineMultiplex = v.multiplex
			opt.MaxFlushDelay = v.delay
			c, err := rueidis.NewClient(opt)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			g := NewGate(c, Options{})
			var before, after syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			b.ResetTimer()
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					a := vote("bench-election", fmt.Sprintf("pviewer-%d", i), "ip", int(i), "c")
					a.Budget = 2 * time.Second
					if out, err := g.Reserve(b.Context(), a); err != nil || out.Verdict != Reserved {
						b.Fatalf("Reserve = %+v, %v", out, err)
					}
					if c, err := g.Confirm(b.Context(), a); err != nil || c != Confirmed {
						b.Fatalf("Confirm = %v, %v", c, err)
					}
				}
			})
			b.StopTimer()
			syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "client-cpu-µs/vote")
			b.ReportMetric(float64(time.Duration(after.Stime.Nano()-before.Stime.Nano()).Microseconds())/float64(b.N), "sys-µs/vote")
		})
	}
}
