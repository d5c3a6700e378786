// Package loadgen is the one load generator of ocfcloud's benchmarks: it runs
// a request function from many workers, either as fast as possible (closed
// loop, for throughput) or at a fixed rate (open loop, for latency at a given
// load), and reports throughput and latency percentiles. It knows nothing
// about HTTP or CoAP: callers pass a function.
package loadgen
