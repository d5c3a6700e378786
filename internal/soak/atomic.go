package soak

import "sync/atomic"

type atomicInt struct{ v atomic.Int64 }

func (a *atomicInt) add()      { a.v.Add(1) }
func (a *atomicInt) load() int { return int(a.v.Load()) }
