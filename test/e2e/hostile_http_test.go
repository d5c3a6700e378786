package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
)

// TestHostileHTTPInputGetsCorrectStatusCodes sends what an attacker or a
// broken client sends and expects the protocol's own answer each time, with
// the server still serving afterwards.
func TestHostileHTTPInputGetsCorrectStatusCodes(t *testing.T) {
	c, err := cloud.New(context.Background(), cloud.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", CoAPAddr: "-", CoAPSAddr: "-",
		AdminPassword: adminPassword, Logger: testLogger(t), HTTPReadHeaderTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	base := "http://" + c.HTTPAddr()
	api := &client{t: t, base: base, token: passwordToken(t, base, "")}

	huge := strings.Repeat("a", 300<<10)
	cases := []struct {
		name   string
		method string
		path   string
		body   string
		header map[string]string
		want   int
	}{
		{"malformed JSON update", http.MethodPost, "/api/v1/devices/9cfbeb8e-5a1e-4d1c-9d01-00c04fd430c8/light/1", `{"state":`, map[string]string{"Content-Type": "application/json"}, http.StatusBadRequest},
		{"body over the limit", http.MethodPost, "/oauth/token", "grant_type=password&x=" + huge, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusBadRequest},
		{"token endpoint with JSON", http.MethodPost, "/oauth/token", `{"grant_type":"password"}`, map[string]string{"Content-Type": "application/json"}, http.StatusBadRequest},
		{"path traversal", http.MethodGet, "/api/v1/devices/..%2F..%2Fetc%2Fpasswd", "", nil, http.StatusNotFound},
		{"garbage bearer", http.MethodGet, "/api/v1/devices", "", map[string]string{"Authorization": "Bearer " + strings.Repeat("x.", 2000)}, http.StatusUnauthorized},
		{"bearer in the query string", http.MethodGet, "/api/v1/devices?access_token=" + api.token, "", map[string]string{"Authorization": ""}, http.StatusUnauthorized},
		{"unknown route", http.MethodGet, "/api/v2/devices", "", nil, http.StatusNotFound},
		{"wrong method", http.MethodPatch, "/api/v1/devices", "", nil, http.StatusMethodNotAllowed},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+api.token)
		for k, v := range tc.header {
			if v == "" {
				req.Header.Del(k)
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}

	// Headers beyond the limit: 431, not a crash or a hang.
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/devices", nil)
	req.Header.Set("X-Junk", strings.Repeat("j", 128<<10))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("huge header: %d", resp.StatusCode)
		}
	}

	// Slowloris: a client that never finishes its headers is cut off by the
	// server's header timeout instead of holding a connection forever.
	conn, err := net.Dial("tcp", c.HTTPAddr())
	start := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /readyz HTTP/1.1\r\nHost: x\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	// The server may answer 408 before closing; either way it ends the
	// connection instead of waiting for the rest.
	_, _ = io.ReadAll(bufio.NewReader(conn))
	if time.Since(start) > 20*time.Second {
		t.Fatal("a client that never finished its headers held the connection")
	}

	// A flood of bad tokens is answered 401, or 429 with Retry-After once
	// the address spent its budget of failed signature checks, and good
	// requests still get through afterwards.
	var wg sync.WaitGroup
	var bad sync.Map
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/devices", nil)
				req.Header.Set("Authorization", fmt.Sprintf("Bearer eyJhbGciOiJFUzI1NiJ9.%d.%d", w, i))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusUnauthorized:
				case resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "":
				default:
					bad.Store(resp.StatusCode, true)
				}
			}
		}()
	}
	wg.Wait()
	bad.Range(func(k, _ any) bool {
		t.Errorf("bad-token flood answered %v", k)
		return true
	})
	var devices []c2cDevice
	api.getJSON("/api/v1/devices", http.StatusOK, &devices)
}
