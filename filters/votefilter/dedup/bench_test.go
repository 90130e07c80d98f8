package dedup

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkStore measures what one admitted vote costs the store, with 64 votes in flight as
// at the edge: the reservation alone (what the store did per vote before votes were held
// pending) and the reservation plus the confirmation after SQS's acknowledgement.
//
//	go test -run '^$' -bench Store -benchtime 20000x ./filters/votefilter/dedup/
func BenchmarkStore(b *testing.B) {
	g := NewGate(client, Options{})
	var n atomic.Int64
	for _, confirmToo := range []bool{false, true} {
		name := "reserve"
		if confirmToo {
			name = "reserve+confirm"
		}
		b.Run(name, func(b *testing.B) {
			b.SetParallelism(32) // × GOMAXPROCS goroutines: 64 on two cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					a := vote("bench-election", fmt.Sprintf("viewer-%d", i), "ip", int(i), "c")
					a.Budget = 2 * time.Second
					out, err := g.Reserve(b.Context(), a)
					if err != nil || out.Verdict != Reserved {
						b.Fatalf("Reserve = %+v, %v", out, err)
					}
					if confirmToo {
						if c, err := g.Confirm(b.Context(), a); err != nil || c != Confirmed {
							b.Fatalf("Confirm = %v, %v", c, err)
						}
					}
				}
			})
		})
	}
}
