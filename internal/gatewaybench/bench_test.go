package gatewaybench

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The benchmark runs end to end at a small size (the memory part needs the
// ocfcloud binary and is covered by running `ocfcloud bench gateway`).
func TestBenchmarkRunsAndReportsEveryNumber(t *testing.T) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("GATEWAYBENCH_N")); err == nil {
		n = v
	}
	o := Options{Onboardings: n, IdleDevices: -1, Handshakes: n / 2, Reconnects: n, Concurrency: 16, SourceIPs: "127.0.0.1-127.0.0.8", InProcessBackend: true}
	if os.Getenv("GATEWAYBENCH_ONLY") == "onboarding" { // profiling
		o.Handshakes, o.Reconnects, o.Concurrency = -1, -1, 64
	}
	var out bytes.Buffer
	err := Run(context.Background(), o, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	wants := []string{"full onboardings", "bare crypto/tls", "% of bare", "reconnect storm"}
	if o.Handshakes < 0 {
		wants = wants[:1]
	}
	for _, want := range wants {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
