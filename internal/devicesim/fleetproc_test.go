package devicesim

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

func TestFleetProcessCommandLine(t *testing.T) {
	cmd := FleetProcess(context.Background(), FleetProcessArgs{
		Command: []string{"/bin/ocfcloud", "device-sim"}, Count: 5, APIURL: "http://c", Username: "admin",
		Password: "secret", ChangeEvery: time.Second,
	})
	want := []string{"/bin/ocfcloud", "device-sim", "--count", "5", "--api-url", "http://c", "--username", "admin",
		"--log-level", "error", "--change-every", "1s"}
	if !slices.Equal(cmd.Args, want) {
		t.Errorf("args %q, want %q", cmd.Args, want)
	}
	if slices.Contains(cmd.Args, "secret") || !slices.Contains(cmd.Env, "OCFCLOUD_PASSWORD=secret") {
		t.Error("the password must travel in the environment, not the command line")
	}
}

func TestOnlineDevicesReadsIDsAndTotal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" || r.URL.Query().Get("$filter") != "online eq true" || r.URL.Query().Get("$top") != "2" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte(`{"value":[{"device":{"di":"a"}},{"device":{"di":"b"}}],"TotalCount":7}`))
	}))
	defer srv.Close()
	ids, total, err := OnlineDevices(context.Background(), srv.Client(), srv.URL, "tok", 2)
	if err != nil || !slices.Equal(ids, []string{"a", "b"}) || total != 7 {
		t.Fatalf("%v %d %v", ids, total, err)
	}
	if _, _, err := OnlineDevices(context.Background(), srv.Client(), srv.URL, "other", 2); err == nil {
		t.Error("a 400 answer is not an error")
	}
}
