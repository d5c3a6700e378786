package c2capi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ocfcloud/ocfcloud/internal/c2cbench"
)

// The benchmarks below measure what one request costs the whole in-process
// cloud (client, net/http, middlewares, API, registry; for the live POST
// also the gateway and the simulated device). Allocations per op are the
// figure to compare: they are stable from run to run, timings are not.
// BenchmarkBareSameBytes is the floor the same client and net/http cost on
// their own, so the difference to BenchmarkTwinRead is the server's work:
//
//	go test -run '^$' -bench 'TwinRead|BareSameBytes|LivePost' -benchmem ./c2c-api/

const benchDevice = "5b8a3f2e-7c1d-4e9a-8b6f-0d2c4a6e8f10"

// benchClient is a keep-alive client that, like `ocfcloud bench c2c`, does
// not ask for gzip.
func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 4}}
}

func benchCall(b *testing.B, c *http.Client, method, url, token string, body []byte, want int) []byte {
	status, data, err := c2cbench.Call(context.Background(), c, method, url, token, body)
	if err != nil || status != want {
		b.Fatalf("%s %s: %d %v %s", method, url, status, err, data)
	}
	return data
}

// BenchmarkTwinRead is one twin read, GET /api/v1/devices/{id}/light/1,
// with a token the verifier has seen.
func BenchmarkTwinRead(b *testing.B) {
	s := startStack(b)
	s.onboardDevice(benchDevice)
	c := benchClient()
	u := s.base + "/api/v1/devices/" + benchDevice + "/light/1"
	benchCall(b, c, http.MethodGet, u, s.token, nil, http.StatusOK)
	b.ReportAllocs()
	for b.Loop() {
		benchCall(b, c, http.MethodGet, u, s.token, nil, http.StatusOK)
	}
}

// BenchmarkBareSameBytes is BenchmarkTwinRead's client against a bare
// net/http handler answering the twin's bytes.
func BenchmarkBareSameBytes(b *testing.B) {
	s := startStack(b)
	s.onboardDevice(benchDevice)
	c := benchClient()
	twin := benchCall(b, c, http.MethodGet, s.base+"/api/v1/devices/"+benchDevice+"/light/1", s.token, nil, http.StatusOK)
	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(twin)
	}))
	defer bare.Close()
	benchCall(b, c, http.MethodGet, bare.URL, s.token, nil, http.StatusOK)
	b.ReportAllocs()
	for b.Loop() {
		benchCall(b, c, http.MethodGet, bare.URL, s.token, nil, http.StatusOK)
	}
}

// BenchmarkLivePost is one live update, POST /api/v1/devices/{id}/light/1,
// through the gateway to the simulated device and back; the device's
// notification of the change then updates the twin.
func BenchmarkLivePost(b *testing.B) {
	s := startStack(b)
	s.onboardDevice(benchDevice)
	c := benchClient()
	u := s.base + "/api/v1/devices/" + benchDevice + "/light/1"
	body := []byte(`{"power":5}`)
	benchCall(b, c, http.MethodPost, u, s.token, body, http.StatusOK)
	b.ReportAllocs()
	for b.Loop() {
		benchCall(b, c, http.MethodPost, u, s.token, body, http.StatusOK)
	}
}
