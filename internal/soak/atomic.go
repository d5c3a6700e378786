package soak

import "sync/atomic"

type atomicInt struct{ v atomic.Int64 }

func (a *atomicInt) add() int { return int(a.v.Add(1)) }

// load is 0 on a nil counter (no such source).
func (a *atomicInt) load() int {
	if a == nil {
		return 0
	}
	return int(a.v.Load())
}
