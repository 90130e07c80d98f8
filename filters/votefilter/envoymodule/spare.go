package envoymodule

import "time"

// A vote's goroutine grows its stack several times (decoding the token's JSON, the key lookup,
// the store's client), and a fresh goroutine per vote pays that copying on every vote, a few
// per cent of the edge's CPU. A goroutine that finished a vote waits a while for the next one
// instead, with the stack it already has.
var handoff = make(chan func())

// spareIdle is how long a finished goroutine waits for more work before it exits, so a spike's
// goroutines do not stay after it.
const spareIdle = 10 * time.Second

// async runs task on a waiting goroutine, or on a new one when none waits.
func async(task func()) {
	select {
	case handoff <- task:
	default:
		go spare(task)
	}
}

func spare(task func()) {
	idle := time.NewTimer(spareIdle)
	defer idle.Stop()
	for {
		task()
		idle.Reset(spareIdle)
		select {
		case task = <-handoff:
		case <-idle.C:
			return
		}
	}
}
