package devicesim

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

type sameCode struct{}

func (sameCode) Next(context.Context) (Onboarding, error) { return Onboarding{AT: fakeCode}, nil }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFleetConnectsFromManySourceAddressesAndChangesOnSchedule(t *testing.T) {
	f := newFakeCloud(t)
	ips, err := ParseSourceIPs("127.0.0.2-127.0.0.4")
	if err != nil {
		t.Fatal(err)
	}
	var progress syncBuffer
	fleet, err := NewFleet(FleetConfig{
		Count:     6,
		Device:    Config{CIS: f.cis(), PingInterval: time.Second, ChangeEvery: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		Codes:     sameCode{},
		SourceIPs: ips,
		StartRate: 100,
		Progress:  &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fleet.Run(ctx) }()
	waitFor(t, 10*time.Second, "all devices online", func() bool { return fleet.Stats().Ready == 6 })

	sources := map[string]bool{}
	dis := map[string]bool{}
	for i := 1; i <= 6; i++ {
		host, _, _ := net.SplitHostPort(f.conn(i).RemoteAddr().String())
		sources[host] = true
	}
	for _, d := range fleet.Devices() {
		dis[d.DeviceID()] = true
	}
	if len(sources) != 3 || !sources["127.0.0.2"] || !sources["127.0.0.4"] {
		t.Errorf("source addresses %v, want 127.0.0.2-4", sources)
	}
	if len(dis) != 6 {
		t.Errorf("%d distinct device ids, want 6", len(dis))
	}
	d := fleet.Devices()[0]
	s0, p0, _ := d.Light()
	waitFor(t, 5*time.Second, "the light to change on its schedule", func() bool {
		s, p, _ := d.Light()
		return s != s0 || p != p0
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("fleet: %v", err)
	}
	if out := progress.String(); !strings.Contains(out, "6/6 started, 6 online") {
		t.Errorf("progress output %q", out)
	}
}

func TestParseSourceIPs(t *testing.T) {
	for spec, want := range map[string][]string{
		"127.0.0.1":                      {"127.0.0.1"},
		"127.0.0.1-127.0.0.3":            {"127.0.0.1", "127.0.0.2", "127.0.0.3"},
		"127.0.1.0/30":                   {"127.0.1.1", "127.0.1.2"},
		"127.0.0.9, 127.0.0.1-127.0.0.2": {"127.0.0.9", "127.0.0.1", "127.0.0.2"},
	} {
		got, err := ParseSourceIPs(spec)
		if err != nil {
			t.Errorf("%q: %v", spec, err)
			continue
		}
		var s []string
		for _, a := range got {
			s = append(s, a.String())
		}
		if strings.Join(s, ",") != strings.Join(want, ",") {
			t.Errorf("%q: %v, want %v", spec, s, want)
		}
	}
	for _, bad := range []string{"x", "127.0.0.3-127.0.0.1", "1.2.3.4/99"} {
		if _, err := ParseSourceIPs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
