// Package soak runs the whole cloud in-process with a fleet of simulated
// devices that keep changing their resources, for a long time, and samples
// the process's heap, goroutines and event throughput, so a leak shows up
// as a trend in a table rather than as an outage at 3 a.m.
package soak
