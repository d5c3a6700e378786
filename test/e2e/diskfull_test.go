//go:build linux

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestFullDiskIsSurvivedWithoutRestart runs `ocfcloud serve` on a 96 MiB
// tmpfs (inside a user+mount namespace) with a device publishing, fills the
// tmpfs to the last byte and frees it again. While it is full, JetStream's
// write error shows in /readyz; once there is room, the embedded server
// restarts JetStream by itself, /readyz is 200 again, and the change the
// device made while the disk was full reaches the twin without another
// change and without a restart.
func TestFullDiskIsSurvivedWithoutRestart(t *testing.T) {
	t.Parallel()
	requireNamespaces(t)
	bin := buildOcfcloud(t)
	dir := t.TempDir()
	httpAddr, coapAddr := unusedAddr(t), unusedAddr(t)
	args := append(goodServeArgs(dir, httpAddr, coapAddr, adminPassword), "--min-free-disk", "16MiB")
	cmd := inNamespace(`mount -t tmpfs -o size=96m tmpfs "$1"`, dir, bin, args...)
	stop := startServe(t, cmd, httpAddr)
	// The namespace's tmpfs, as seen from here.
	filler := fmt.Sprintf("/proc/%d/root%s/filler", cmd.Process.Pid, dir)

	base := "http://" + httpAddr
	api := &client{t: t, base: base, token: passwordToken(t, base, "")}
	const di = "d15cf011-7a3b-4c5d-8e9f-0a1b2c3d4e5f"
	dev, _ := runDevice(t, onboard(t, api), di)
	dev.SetLight(true, 1)
	waitFor(t, "twin power 1", 20*time.Second, func() bool { return twinLight(api, di)["power"] == float64(1) })

	fillDisk(t, filler)
	// Each change is an event to store; the first write that needs a new
	// page of the full tmpfs fails.
	power := 1
	waitFor(t, "/readyz to report JetStream's write error", 60*time.Second, func() bool {
		power = power%90 + 2
		dev.SetLight(true, power)
		time.Sleep(200 * time.Millisecond)
		st, code := readyState(base)
		return code == http.StatusServiceUnavailable && !st["jetstream"]
	})
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	waitFor(t, "/readyz 200 after space was freed", 60*time.Second, func() bool { return readyz(base) == http.StatusOK })
	t.Logf("ready %v after the space was freed", time.Since(freed).Round(10*time.Millisecond))
	waitFor(t, fmt.Sprintf("the change made on the full disk (power %d) in the twin", power), 60*time.Second, func() bool {
		return twinLight(api, di)["power"] == float64(power)
	})
	t.Logf("the twin had the last change %v after the space was freed", time.Since(freed).Round(10*time.Millisecond))
	dev.SetLight(false, 95)
	waitFor(t, "a change after the recovery in the twin", 20*time.Second, func() bool {
		l := twinLight(api, di)
		return l["power"] == float64(95) && l["state"] == false
	})
	stop()
}

// fillDisk writes zeros to path until its file system has no room left.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	// What is left is smaller than a MiB: fill it to the last page.
	for n := len(buf) / 2; n >= 512; n /= 2 {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
}

// twinLight is the twin of the device's light, nil until it can be read.
func twinLight(api *client, di string) map[string]any {
	resp, body := api.do(http.MethodGet, "/api/v1/devices/"+di+"/light/1", nil, "")
	var light map[string]any
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &light) != nil {
		return nil
	}
	return light
}

// readyState is /readyz's status and its per-component states.
func readyState(base string) (map[string]bool, int) {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return nil, 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st map[string]bool
	_ = json.Unmarshal(body, &st)
	return st, resp.StatusCode
}
