package gatewaybench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	"github.com/plgd-dev/go-coap/v3/tcp/client"

	"github.com/nats-io/nats.go"

	coapgateway "github.com/ocfcloud/ocfcloud/coap-gateway"
	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// Process is a server process of the memory measurement. It prints
// "ready <addr>" when listening and answers "gc" on stdin with "ok" after
// two garbage collections, so RSS is read in a steady state.
type Process struct {
	Addr string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
}

func spawnSelf(role string, args []string) (*Process, error) {
	return SpawnBenchRole("gateway", role, args...)
}

// SpawnBenchRole starts a server process of a benchmark by re-running this
// executable (the ocfcloud binary) as `bench <bench> --role <role> --
// <args>`; the process must print "ready <addr>" (see Process).
func SpawnBenchRole(bench, role string, args ...string) (*Process, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return Spawn(exec.Command(exe, append([]string{"bench", bench, "--role", role, "--"}, args...)...))
}

// SpawnSelf starts a server process of role ("backend", "gateway" or
// "bare") by re-running this executable as `bench gateway --role <role>
// -- <args>`; the executable must be the ocfcloud binary.
func SpawnSelf(role string, args []string) (*Process, error) { return spawnSelf(role, args) }

// Spawn starts cmd as a server process (see Process).
func Spawn(cmd *exec.Cmd) (*Process, error) {
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, in: in, out: bufio.NewReader(out)}
	line, err := p.readLine(30 * time.Second)
	if err != nil {
		p.Stop()
		return nil, err
	}
	addr, ok := strings.CutPrefix(line, "ready ")
	if !ok {
		p.Stop()
		return nil, fmt.Errorf("server process said %q", line)
	}
	p.Addr = addr
	return p, nil
}

func (p *Process) readLine(timeout time.Duration) (string, error) {
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := p.out.ReadString('\n')
		ch <- result{strings.TrimSpace(s), err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(timeout):
		return "", errors.New("server process: no answer")
	}
}

// Usage is a server process's memory after two garbage collections.
type Usage struct {
	RSS, Heap, Stack int64
	Goroutines       int64
}

// RSSAfterGC asks the process to collect garbage twice and returns its
// resident set size and Go heap and stack use in bytes.
func (p *Process) RSSAfterGC() (Usage, error) {
	var u Usage
	if _, err := io.WriteString(p.in, "gc\n"); err != nil {
		return u, err
	}
	line, err := p.readLine(60 * time.Second)
	if err != nil || !strings.HasPrefix(line, "ok") {
		return u, fmt.Errorf("server process gc: %q %v", line, err)
	}
	_, _ = fmt.Sscanf(line, "ok heap=%d stack=%d goroutines=%d", &u.Heap, &u.Stack, &u.Goroutines)
	u.RSS, err = rss(p.cmd.Process.Pid)
	return u, err
}

// RSS returns the process's resident set size now, without collecting
// garbage first.
func (p *Process) RSS() (int64, error) { return rss(p.cmd.Process.Pid) }

// WriteHeapProfile asks the process to write its heap profile to file.
func (p *Process) WriteHeapProfile(file string) error {
	if _, err := io.WriteString(p.in, "heap "+file+"\n"); err != nil {
		return err
	}
	_, err := p.readLine(60 * time.Second)
	return err
}

// Stop ends the process. With GATEWAYBENCH_CPU set it first gives the
// process a second to write its CPU profile.
func (p *Process) Stop() {
	_ = p.in.Close()
	if os.Getenv("GATEWAYBENCH_CPU") != "" {
		time.Sleep(time.Second)
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

func rss(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("rss: %w", err)
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(v))
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("rss: no VmRSS")
}

// ServeRole runs a server process of the memory measurement: role
// "gateway" (the real gateway on the parent's NATS and token endpoint) or
// "bare" (a go-coap server with the gateway's memory options answering
// 2.04, the floor). It serves until stdin closes.
func ServeRole(ctx context.Context, role string, args []string, stdin io.Reader, stdout io.Writer) error {
	if os.Getenv("GATEWAYBENCH_HEAP") != "" {
		runtime.MemProfileRate = 256 // fine-grained profile for diagnostics
	}
	// Diagnostics: GATEWAYBENCH_CPU=<dir> writes <dir>/<role>-<pid>.cpu, a
	// CPU profile of the process's whole life (lost when it is killed).
	// It ends when stdin closes, before the role shuts down.
	if dir := os.Getenv("GATEWAYBENCH_CPU"); dir != "" {
		if f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.cpu", role, os.Getpid()))); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile() // harmless when already stopped
			}
			defer f.Close()
		}
	}
	// A server, tuned as `ocfcloud serve` tunes itself.
	platform.TuneGC(nil)
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	natsURL := fs.String("nats-url", "", "")
	tokenURL := fs.String("token-url", "", "")
	jwksURL := fs.String("jwks-url", "", "")
	issuer := fs.String("issuer", "", "")
	listen := fs.String("addr", "127.0.0.1:0", "")
	// Limits of the gateway role; zero keeps the gateway's defaults.
	var limits coapgateway.Limits
	fs.DurationVar(&limits.SignInTimeout, "sign-in-timeout", 0, "")
	fs.DurationVar(&limits.InactivityTimeout, "inactivity-timeout", 0, "")
	fs.DurationVar(&limits.WriteTimeout, "write-timeout", 0, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var addr string
	switch role {
	case "backend":
		b, err := startBackendServer(ctx)
		if err != nil {
			return err
		}
		defer b.close()
		addr = b.nats.URL() + " " + b.issuer
	case "gateway":
		nc, err := nats.Connect(*natsURL)
		if err != nil {
			return err
		}
		defer nc.Close()
		g, err := coapgateway.New(ctx, coapgateway.Config{
			Addr: *listen, NATS: nc, TokenURL: *tokenURL,
			Verifier: auth.NewVerifier(ctx, *issuer, *jwksURL, nil),
			Logger:   discard(),
			Limits: coapgateway.Limits{ConnRatePerIP: -1, MaxConnections: 1 << 20,
				SignInTimeout: limits.SignInTimeout, InactivityTimeout: limits.InactivityTimeout, WriteTimeout: limits.WriteTimeout},
		})
		if err != nil {
			return err
		}
		defer g.Close()
		addr = g.Addrs()[0].String()
	case "bare":
		l, err := coapnet.NewTCPListener("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		router := mux.NewRouter()
		router.DefaultHandle(mux.HandlerFunc(func(w mux.ResponseWriter, r *mux.Message) {
			_ = w.SetResponse(codes.Changed, 0, nil)
		}))
		srv := tcp.NewServer(
			options.WithMux(router),
			options.WithErrors(func(error) {}),
			options.WithDisablePeerTCPSignalMessageCSMs(),
			options.WithConnectionCacheSize(256),
			options.WithBlockwise(false, 0, 0),
			options.WithReceivedMessageQueueSize(1),
			options.WithInactivityMonitor(time.Minute, func(cc *client.Conn) { _ = cc.Close() }),
		)
		go func() { _ = srv.Serve(l) }()
		defer srv.Stop()
		addr = l.Addr().String()
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	fmt.Fprintf(stdout, "ready %s\n", addr)
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		if file, ok := strings.CutPrefix(sc.Text(), "heap "); ok {
			// Diagnostics: GATEWAYBENCH_HEAP=<dir> writes <dir>/<role>.heap.
			if f, err := os.Create(file); err == nil {
				runtime.GC()
				_ = pprof.WriteHeapProfile(f)
				_ = f.Close()
			}
			if f, err := os.Create(strings.TrimSuffix(file, ".heap") + ".goroutines"); err == nil {
				_ = pprof.Lookup("goroutine").WriteTo(f, 1)
				_ = f.Close()
			}
			fmt.Fprintln(stdout, "ok")
			continue
		}
		if sc.Text() == "gc" {
			gcs := 2
			if n, err := strconv.Atoi(os.Getenv("GATEWAYBENCH_GCS")); err == nil && n > 0 {
				gcs = n
			}
			for range gcs {
				runtime.GC()
			}
			debug.FreeOSMemory()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Fprintf(stdout, "ok heap=%d stack=%d goroutines=%d\n", ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine())
		}
	}
	pprof.StopCPUProfile()
	return nil
}
