package floodbench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/gatewaybench"
)

// The test binary doubles as the child processes (backend and gateway),
// as the ocfcloud binary does for the real benchmark.
func TestMain(m *testing.M) {
	if role := os.Getenv("FLOODBENCH_ROLE"); role != "" {
		var args []string
		if i := slices.Index(os.Args, "--"); i >= 0 {
			args = os.Args[i+1:]
		}
		if err := gatewaybench.ServeRole(context.Background(), role, args, os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func spawnTestBinary(role string, args []string) (*gatewaybench.Process, error) {
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "FLOODBENCH_ROLE="+role)
	return gatewaybench.Spawn(cmd)
}

// The benchmark runs end to end at a tiny size and reports every figure.
func TestFloodReportsMemoryLatencyAndWhatTheGatewayClosed(t *testing.T) {
	o := Options{
		Idle: 40, Garbage: 12, Devices: 2, Concurrency: 8, SourceIPs: "127.0.0.1-127.0.0.4",
		Before: time.Second, SignInTimeout: time.Second, InactivityTimeout: 2 * time.Second,
		Hold: 5 * time.Second, PingEvery: 500 * time.Millisecond,
		Spawn: spawnTestBinary,
	}
	var out bytes.Buffer
	r, err := Run(context.Background(), o, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if r.Opened != o.Idle || r.Refused != 0 {
		t.Errorf("opened %d, refused %d, want %d and 0", r.Opened, r.Refused, o.Idle)
	}
	if r.Before.Requests.n() == 0 || r.Held.Requests.n() == 0 || r.Held.Commands.n() == 0 {
		t.Errorf("signed-in devices not measured before and during the flood: %+v %+v", r.Before, r.Held)
	}
	for _, k := range r.Kinds {
		// Frames the gateway cannot parse end their connection at once; a
		// frame that stalls mid-message ends it at the inactivity timeout.
		if strings.Contains(k.Name, "GiB") || strings.Contains(k.Name, "overrun") || strings.Contains(k.Name, "truncated") {
			if k.Count == 0 || k.Closed != k.Count {
				t.Errorf("%s: %d of %d closed by the gateway", k.Name, k.Closed, k.Count)
			}
		}
	}
	for _, want := range []string{"per open flood connection", "p99 / before", "closed by the gateway", "idle, pinging"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
