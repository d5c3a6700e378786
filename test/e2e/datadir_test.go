//go:build linux

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run the real binary: the data-dir check and its exit code live
// in `ocfcloud serve`. CI runs as root, where permission bits do not stop
// writes, so each unusable data dir is made with a mechanism that works for
// root without mounting on the host: another uid, a read-only or tiny tmpfs
// mount inside an unprivileged user+mount namespace (unshare), a read-only
// mount a container already has (/sys, /proc/sys), a file in the way, and a
// free-space minimum above what the disk has.

const exitDataDirUnusable = 3 // cmd/ocfcloud/serve.go, docs/deploy.md

// buildOcfcloud builds cmd/ocfcloud into a directory any user may read, so
// the binary can also run under another uid.
func buildOcfcloud(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "ocfcloud")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/ocfcloud").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// refused runs cmd, which must be an `ocfcloud serve` on an unusable data
// dir, and checks that it exits 3 at once with one line on stderr naming dir
// and reason.
func refused(t *testing.T, cmd *exec.Cmd, dir, reason string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("serve did not stop on an unusable data dir; stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitDataDirUnusable {
		t.Fatalf("exit %v, want code %d; stderr:\n%s", err, exitDataDirUnusable, &stderr)
	}
	msg := strings.TrimSpace(stderr.String())
	if strings.Contains(msg, "\n") || !strings.Contains(msg, dir) || !strings.Contains(msg, reason) {
		t.Fatalf("stderr %q: want one line naming %s and %q", msg, dir, reason)
	}
	if stdout.Len() > 0 {
		t.Fatalf("stdout on a refused start: %s", &stdout)
	}
	t.Logf("exit %d: %s", ee.ExitCode(), msg)
}

// serveArgs are the flags of a start that must not get far enough to need
// ports; extra come last and win.
func serveArgs(dir string, extra ...string) []string {
	return append([]string{"serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--coap-addr", "-", "--coaps-addr", "-"}, extra...)
}

// inNamespace runs bin with args inside a new user+mount namespace where
// root of the namespace is the caller, after the shell commands in setup
// (which see the data dir as "$1"). Nothing it mounts is visible outside.
func inNamespace(setup, dir, bin string, args ...string) *exec.Cmd {
	script := setup + ` || exit 99; shift; exec "$@"`
	return exec.Command("unshare", append([]string{"--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", dir, bin}, args...)...)
}

// requireNamespaces skips the calling variant when this machine cannot make
// an unprivileged user+mount namespace with a tmpfs in it (Docker's default
// seccomp profile forbids it, for one).
func requireNamespaces(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	out, err := exec.Command("unshare", "--user", "--map-root-user", "--mount", "sh", "-c", `mount -t tmpfs -o size=1m tmpfs "$0"`, t.TempDir()).CombinedOutput()
	if err != nil {
		t.Skipf("no unprivileged user+mount namespaces here (unshare --user --map-root-user --mount; mount -t tmpfs: %v %s)", err, bytes.TrimSpace(out))
	}
}

const (
	readOnlyBind = `mount --bind "$1" "$1" && mount -o remount,bind,ro "$1"`
	tinyTmpfs    = `mount -t tmpfs -o size=1m tmpfs "$1"`
	fullTmpfs    = tinyTmpfs + ` && { dd if=/dev/zero of="$1/fill" bs=4k >/dev/null 2>&1; true; }`
)

func TestServeRefusesAnUnusableDataDirWithExitCode3(t *testing.T) {
	bin := buildOcfcloud(t)

	t.Run("a file where the data dir should be", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "data")
		if err := os.WriteFile(file, []byte("not a dir"), 0o600); err != nil {
			t.Fatal(err)
		}
		refused(t, exec.Command(bin, serveArgs(file)...), file, "not a directory")
		refused(t, exec.Command(bin, serveArgs(filepath.Join(file, "sub"))...), filepath.Join(file, "sub"), "not a directory")
		if b, _ := os.ReadFile(file); string(b) != "not a dir" {
			t.Fatalf("the file in the way was changed: %q", b)
		}
	})

	t.Run("less free space than --min-free-disk", func(t *testing.T) {
		dir := t.TempDir()
		need := freeMiB(t, dir) + 1024
		refused(t, exec.Command(bin, serveArgs(dir, "--min-free-disk", fmt.Sprintf("%dMiB", need))...), dir,
			fmt.Sprintf("free of the required %d MiB", need))
		assertEmpty(t, dir)
	})

	t.Run("permission denied", func(t *testing.T) {
		dir := t.TempDir()
		cmd := exec.Command(bin, serveArgs(dir)...)
		if os.Geteuid() == 0 {
			// Root ignores permission bits, so the binary runs as nobody on
			// a root-owned 0755 directory.
			for _, d := range []string{dir, filepath.Dir(dir)} {
				if err := os.Chmod(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		} else if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		refused(t, cmd, dir, "permission denied")
		assertEmpty(t, dir)
	})

	t.Run("read-only file system (bind mount in a user namespace)", func(t *testing.T) {
		requireNamespaces(t)
		dir := t.TempDir()
		refused(t, inNamespace(readOnlyBind, dir, bin, serveArgs(dir)...), dir, "read-only file system")
		assertEmpty(t, dir)
	})

	t.Run("read-only file system (a read-only mount the container has)", func(t *testing.T) {
		mnt := readOnlySystemMount(t)
		dir := filepath.Join(mnt, "ocfcloud-e2e-data")
		refused(t, exec.Command(bin, serveArgs(dir)...), dir, "read-only file system")
	})

	t.Run("small file system below the default minimum", func(t *testing.T) {
		requireNamespaces(t)
		dir := t.TempDir()
		refused(t, inNamespace(tinyTmpfs, dir, bin, serveArgs(dir)...), dir, "only 1 MiB free of the required 64 MiB")
	})

	t.Run("full file system (no space left on device)", func(t *testing.T) {
		requireNamespaces(t)
		dir := t.TempDir()
		refused(t, inNamespace(fullTmpfs, dir, bin, serveArgs(dir, "--min-free-disk", "0")...), dir, "no space left on device")
	})
}

// TestFailedStartsLeaveExistingDataIntact makes data in a cloud, stops it,
// makes its data dir unusable in every way available here, checks that each
// refused start changed no file, and starts again: the admin, an app
// registration, the cloud id and an onboarded device with its twin are all
// still there.
func TestFailedStartsLeaveExistingDataIntact(t *testing.T) {
	bin := buildOcfcloud(t)
	root := t.TempDir()
	dir := filepath.Join(root, "data")
	httpAddr, coapAddr := unusedAddr(t), unusedAddr(t)
	base := "http://" + httpAddr

	stop := serveGood(t, bin, dir, httpAddr, coapAddr, adminPassword)
	api := &client{t: t, base: base, token: passwordToken(t, base, "")}
	resp, body := api.do(http.MethodPost, "/api/v1/apps", strings.NewReader(`{"name":"survivor","type":"web","redirectUris":["https://app.example.com/cb"]}`), "application/json")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create app: %d %s", resp.StatusCode, body)
	}
	var app struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &app); err != nil || app.ID == "" {
		t.Fatalf("create app answer %s", body)
	}
	code := onboard(t, api)
	const di = "6c6f5b36-93c2-4b5e-a1a3-9a3d1e0d2f11"
	dev, stopDev := runDevice(t, code, di)
	dev.SetLight(true, 42)
	waitFor(t, "the twin has the light", 20*time.Second, func() bool {
		resp, _ := api.do(http.MethodGet, "/api/v1/devices/"+di+"/light/1", nil, "")
		return resp.StatusCode == http.StatusOK && lightOf(t, api, di)["power"] == float64(42)
	})
	stopDev()
	stop()

	before := snapshot(t, dir)
	unchanged := func(t *testing.T) {
		t.Helper()
		if after := snapshot(t, dir); after != before {
			t.Fatalf("a refused start changed the data dir:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	}
	t.Run("too little free space", func(t *testing.T) {
		need := freeMiB(t, dir) + 1024
		refused(t, exec.Command(bin, serveArgs(dir, "--min-free-disk", fmt.Sprintf("%dMiB", need))...), dir, "free of the required")
		unchanged(t)
	})
	t.Run("read-only file system", func(t *testing.T) {
		requireNamespaces(t)
		refused(t, inNamespace(readOnlyBind, dir, bin, serveArgs(dir)...), dir, "read-only file system")
		unchanged(t)
	})
	t.Run("permission denied", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to run the binary as another user; TestServeRefusesAnUnusableDataDirWithExitCode3 covers chmod")
		}
		// The cloud made the data dir root-owned with mode 0700, so
		// user nobody cannot write in it.
		cmd := exec.Command(bin, serveArgs(dir)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		refused(t, cmd, dir, "permission denied")
		unchanged(t)
	})
	t.Run("a file in its place", func(t *testing.T) {
		moved := dir + ".moved"
		if err := os.Rename(dir, moved); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		refused(t, exec.Command(bin, serveArgs(dir)...), dir, "not a directory")
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(moved, dir); err != nil {
			t.Fatal(err)
		}
		unchanged(t)
	})

	// A different --admin-password must not matter: admin exists already.
	serveGood(t, bin, dir, httpAddr, coapAddr, "a different password on restart")
	api = &client{t: t, base: base, token: passwordToken(t, base, "")}
	api.getJSON("/api/v1/apps/"+app.ID, http.StatusOK, nil)
	if again := onboard(t, api); again.SID != code.SID || again.CloudCA != code.CloudCA {
		t.Fatalf("cloud id or CA changed: %s → %s", code.SID, again.SID)
	}
	var d c2cDevice
	api.getJSON("/api/v1/devices/"+di, http.StatusOK, &d)
	if l := lightOf(t, api, di); l["power"] != float64(42) {
		t.Fatalf("twin after the restart: %v", l)
	}
}

// serveGood starts the binary on a usable data dir, waits until it is ready
// and returns a stop function (SIGTERM, then a clean exit) that also runs
// at cleanup.
func serveGood(t *testing.T, bin, dir, httpAddr, coapAddr, password string) (stop func()) {
	t.Helper()
	return startServe(t, exec.Command(bin, goodServeArgs(dir, httpAddr, coapAddr, password)...), httpAddr)
}

func goodServeArgs(dir, httpAddr, coapAddr, password string) []string {
	return []string{"serve", "--data-dir", dir, "--http-addr", httpAddr, "--coap-addr", coapAddr, "--coaps-addr", "-",
		"--admin-password", password, "--log-level", "warn"}
}

// startServe starts cmd, an `ocfcloud serve` listening on httpAddr, and
// waits until it is ready; stop (also run at cleanup) sends SIGTERM and
// expects a clean exit.
func startServe(t *testing.T, cmd *exec.Cmd, httpAddr string) (stop func()) {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	log := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if t.Failed() || os.Getenv("SERVELOG") != "" {
			t.Logf("serve's log:\n%s", log())
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve exited with %v:\n%s", err, log())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("serve did not stop after SIGTERM:\n%s", log())
		}
		logf.Close()
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(60 * time.Second)
	for readyz("http://"+httpAddr) != http.StatusOK {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("serve exited before it was ready (%v):\n%s", err, log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready after 60s:\n%s", log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return stop
}

// snapshot lists every file under dir with its mode, size and modification
// time, and every directory with its mode: a refused start must not change
// any of them.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if fi.IsDir() {
			// The probe file's create and remove touch the data dir's
			// mtime; that is all a refused start may change.
			fmt.Fprintf(&b, "%s %v\n", rel, fi.Mode())
			return nil
		}
		fmt.Fprintf(&b, "%s %v %d %s\n", rel, fi.Mode(), fi.Size(), fi.ModTime().Format(time.RFC3339Nano))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func freeMiB(t *testing.T, dir string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize) >> 20
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		t.Fatalf("a refused start left %v in %s", entries, dir)
	}
}

// readOnlySystemMount is /sys or /proc/sys when a container mounted it
// read-only (Docker does by default), else the variant is skipped.
func readOnlySystemMount(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Skipf("cannot read /proc/self/mounts: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || (f[1] != "/sys" && f[1] != "/proc/sys") {
			continue
		}
		for _, o := range strings.Split(f[3], ",") {
			if o == "ro" {
				return f[1]
			}
		}
	}
	t.Skip("neither /sys nor /proc/sys is mounted read-only here (they are in a default Docker container)")
	return ""
}
