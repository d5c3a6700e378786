//go:build cluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var bin string // the ocfcloud binary built for this run

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ocfcloud-cluster-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "ocfcloud")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/ocfcloud")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one process of the topology.
type proc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
}

type topology struct {
	t     *testing.T
	dir   string
	procs map[string]*proc
}

func (tp *topology) start(name string, args ...string) *proc {
	tp.t.Helper()
	logf, err := os.Create(filepath.Join(tp.dir, name+".log"))
	if err != nil {
		tp.t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tp.t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(logf, "\n--- process exited: %v\n", err)
		close(p.exited)
	}()
	tp.procs[name] = p
	tp.t.Cleanup(func() { p.kill(); logf.Close() })
	return p
}

// kill is kill -9: no clean shutdown, no goodbye messages.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func ready(base string) bool {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

type api struct {
	t     *testing.T
	base  string
	token string
}

func (a *api) call(method, path, body string) (int, string) {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, a.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestClusterSurvivesLosingAGatewayAndANATSNode runs the topology of the
// Helm chart on one machine and breaks it: a device on gateway A is
// controlled through C2C API B; killing gateway A takes the device offline,
// it reconnects to gateway B on its own and comes back online; killing one
// NATS node loses no event.
func TestClusterSurvivesLosingAGatewayAndANATSNode(t *testing.T) {
	tp := &topology{t: t, dir: t.ArtifactDir(), procs: map[string]*proc{}}
	t.Logf("process logs in %s", tp.dir)
	data := t.TempDir()
	natsNodes := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	var clientURLs []string
	for i, host := range natsNodes {
		var routes []string
		for j, other := range natsNodes {
			if j != i {
				routes = append(routes, "nats://"+other+":6222")
			}
		}
		tp.start(fmt.Sprintf("nats-%d", i+1), "infra", "nats", "--name", fmt.Sprintf("n%d", i+1),
			"--listen", host+":4222", "--cluster", host+":6222", "--routes", strings.Join(routes, ","),
			"--store-dir", filepath.Join(data, fmt.Sprintf("nats-%d", i+1)))
		clientURLs = append(clientURLs, "nats://"+host+":4222")
	}
	natsURL := strings.Join(clientURLs, ",")
	tp.start("db", "infra", "db", "--listen", "127.0.0.5:27017", "--dir", filepath.Join(data, "db"))
	for _, addr := range []string{"127.0.0.2:4222", "127.0.0.3:4222", "127.0.0.4:4222", "127.0.0.5:27017"} {
		waitFor(t, addr+" listening", 30*time.Second, func() bool { return listening(addr) })
	}
	common := func(dataDir string) []string {
		return []string{"serve", "--data-dir", filepath.Join(data, dataDir), "--nats-url", natsURL,
			"--mongo-uri", "mongodb://127.0.0.5:27017/", "--stream-replicas", "3", "--lease-ttl", "3s",
			"--cloud-id", "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5", "--log-level", "debug"}
	}
	core := "http://127.0.0.6:8080"
	// Services start once the JetStream cluster has a meta leader.
	waitFor(t, "JetStream cluster formed", 60*time.Second, func() bool {
		nc, err := nats.Connect(natsURL)
		if err != nil {
			return false
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err == nil
	})
	tp.start("core", append(common("core"), "--services", "authz,device-registry", "--http-addr", "127.0.0.6:8080",
		"--public-url", core, "--admin-password", "cluster-admin", "--coap-addr", "-", "--coaps-addr", "-",
		"--cis", "coap+tcp://127.0.0.9:5683")...)
	waitFor(t, "authz and registry ready", 90*time.Second, func() bool { return ready(core) })
	for i, host := range []string{"127.0.0.7", "127.0.0.8"} {
		tp.start(fmt.Sprintf("c2c-%c", 'a'+i), append(common(fmt.Sprintf("c2c-%d", i)), "--services", "c2c-api", "--http-addr", host+":8080",
			"--public-url", core, "--authz-url", core, "--coap-addr", "-", "--coaps-addr", "-")...)
	}
	for i, host := range []string{"127.0.0.9", "127.0.0.10"} {
		tp.start(fmt.Sprintf("gateway-%c", 'a'+i), append(common(fmt.Sprintf("gw-%d", i)), "--services", "coap-gateway", "--http-addr", host+":8080",
			"--public-url", core, "--authz-url", core, "--coap-addr", host+":5683", "--coaps-addr", "-")...)
	}
	for _, host := range []string{"127.0.0.7", "127.0.0.8", "127.0.0.9", "127.0.0.10"} {
		waitFor(t, host+" ready", 150*time.Second, func() bool { return ready("http://" + host + ":8080") })
	}

	form := url.Values{"grant_type": {"password"}, "client_id": {"ocfcloud-cli"}, "username": {"admin"}, "password": {"cluster-admin"}}
	resp, err := http.PostForm(core+"/oauth/token", form)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	apiA := &api{t: t, base: "http://127.0.0.7:8080", token: tok.AccessToken}
	apiB := &api{t: t, base: "http://127.0.0.8:8080", token: tok.AccessToken}
	coreAPI := &api{t: t, base: core, token: tok.AccessToken}
	st, body := coreAPI.call(http.MethodPost, "/api/v1/onboarding-codes", "")
	if st != http.StatusCreated {
		t.Fatalf("onboarding code: %d %s", st, body)
	}
	var code struct{ AT string }
	_ = json.Unmarshal([]byte(body), &code)

	const di = "c1a55e7e-1111-4222-8333-944455566677"
	tp.start("device", "device-sim", "--cis", "coap+tcp://127.0.0.9:5683,coap+tcp://127.0.0.10:5683",
		"--at", code.AT, "--di", di, "--name", "cluster light", "--ping-interval", "2s")
	status := func(a *api) string {
		st, body := a.call(http.MethodGet, "/api/v1/devices/"+di, "")
		if st != http.StatusOK {
			return fmt.Sprint(st)
		}
		var d struct{ Status string }
		_ = json.Unmarshal([]byte(body), &d)
		return d.Status
	}
	power := func(a *api) string {
		_, body := a.call(http.MethodGet, "/api/v1/devices/"+di+"/light/1", "")
		var l struct{ Power int }
		if json.Unmarshal([]byte(body), &l) != nil {
			return ""
		}
		return fmt.Sprint(l.Power)
	}
	waitFor(t, "device online (through gateway A)", 60*time.Second, func() bool { return status(apiB) == "online" })

	// Controlled through C2C API B, the request reaches the device on A.
	waitFor(t, "update through API B", 30*time.Second, func() bool {
		st, _ := apiB.call(http.MethodPost, "/api/v1/devices/"+di+"/light/1", `{"power":11}`)
		return st == http.StatusOK
	})
	waitFor(t, "twin seen through API A", 30*time.Second, func() bool { return power(apiA) == "11" })

	// kill -9 gateway A: the device reconnects to gateway B by itself and
	// is online through it. (If it takes longer than the lease, the
	// registry shows it offline in between; a fast reconnect overtakes
	// that, and A's lost connection must not take it offline afterwards.)
	tp.procs["gateway-a"].kill()
	waitFor(t, "device online through gateway B", 60*time.Second, func() bool {
		log, _ := os.ReadFile(filepath.Join(tp.dir, "device.log"))
		return strings.Contains(string(log), "remote=127.0.0.10:5683") && status(apiA) == "online"
	})
	// Past gateway A's lease: still online (B holds it), not swept offline.
	time.Sleep(4 * time.Second)
	if s := status(apiB); s != "online" {
		t.Fatalf("device %s after gateway A's lease expired, though connected to B", s)
	}
	waitFor(t, "update through API A after failover", 30*time.Second, func() bool {
		st, _ := apiA.call(http.MethodPost, "/api/v1/devices/"+di+"/light/1", `{"power":22}`)
		return st == http.StatusOK
	})
	waitFor(t, "twin after failover", 30*time.Second, func() bool { return power(apiB) == "22" })

	// kill -9 one NATS node: R3 streams keep every event.
	tp.procs["nats-3"].kill()
	for i := 30; i < 40; i++ {
		want := fmt.Sprint(i)
		waitFor(t, "update "+want+" with a NATS node down", 30*time.Second, func() bool {
			st, _ := apiB.call(http.MethodPost, "/api/v1/devices/"+di+"/light/1", `{"power":`+want+`}`)
			return st == http.StatusOK
		})
	}
	waitFor(t, "last change in the twin with a NATS node down", 30*time.Second, func() bool { return power(apiA) == "39" })
}
