package soak

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestVerdictNamesEveryBoundARunExceeds(t *testing.T) {
	flat := &Result{HeapGrowth: 1.2, FirstHeap: 100 << 20, LastHeap: 120 << 20, FirstGoroutines: 2000, LastGoroutines: 2040}
	if err := flat.Verdict(DefaultBounds); err != nil {
		t.Errorf("flat run: %v", err)
	}
	leaky := &Result{HeapGrowth: 2, FirstHeap: 100 << 20, LastHeap: 200 << 20, FirstGoroutines: 2000, LastGoroutines: 2101,
		Errors: 2, DeviceErrors: 1, FirstError: `level=ERROR msg="apply event"`}
	err := leaky.Verdict(DefaultBounds)
	if !errors.Is(err, ErrNotFlat) {
		t.Fatalf("leaky run: %v, want ErrNotFlat", err)
	}
	for _, want := range []string{"heap grew x2.00", "goroutines grew from 2000 to 2101, limit 2100", "2 error lines logged by the cloud and 1 by the devices", `msg="apply event"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("verdict %q does not say %q", err, want)
		}
	}
}

func TestErrorLogCountsErrorsAndKeepsTheFirstWithItsAttributes(t *testing.T) {
	h := newErrorLog()
	log := slog.New(h).With("service", "device-registry")
	log.Info("fine")
	log.Warn("not yet")
	log.Error("apply event", "device_id", "d1")
	log.Error("second")
	if h.count() != 2 {
		t.Errorf("counted %d errors, want 2", h.count())
	}
	if first := h.firstLine(); !strings.Contains(first, "service=device-registry") || !strings.Contains(first, "device_id=d1") {
		t.Errorf("first error line %q", first)
	}
}
