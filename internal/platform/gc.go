package platform

import (
	"bytes"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// ServerGCPercent is the GOGC that TuneGC sets for a server process.
const ServerGCPercent = 400

// TuneGC sets the garbage collector's policy for a server process, unless
// the operator chose one (GOGC or GOMEMLIMIT in the environment): collect
// when the heap has grown by 400 % instead of 100 %, with a soft memory
// limit of 3/4 of the memory the process may use (its cgroup's limit, else
// the machine's).
//
// The services allocate ~8 KB per HTTP request and hold a small live heap
// until there are many devices; with the default GOGC=100 the collector ran
// several times a second under load, and its mark phase on one of two cores
// set the latency tail (twin reads at half load: p99 9.6 ms with GOGC=100,
// 3.9 ms with 400; docs/BENCHMARKS.md). With a large live heap (100k
// devices) the memory limit, not the percentage, decides when to collect.
func TuneGC(log *slog.Logger) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetGCPercent(ServerGCPercent)
	if total := memoryAvailable(); total > 0 {
		debug.SetMemoryLimit(total / 4 * 3)
		if log != nil {
			log.Debug("garbage collector tuned", "gogc", ServerGCPercent, "memory_limit_mib", total/4*3>>20)
		}
	}
}

// memoryAvailable is the cgroup v2 memory limit of this process, or the
// machine's memory when there is none; 0 if neither can be read.
func memoryAvailable() int64 {
	if data, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64); err == nil && v > 0 {
			return v
		}
	}
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("MemTotal:")); ok {
			f := strings.Fields(string(v))
			if len(f) > 0 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	return 0
}
