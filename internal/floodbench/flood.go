package floodbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	"github.com/plgd-dev/go-coap/v3/tcp/client"
	"github.com/plgd-dev/go-coap/v3/tcp/coder"

	"github.com/ocfcloud/ocfcloud/internal/commands"
	"github.com/ocfcloud/ocfcloud/internal/devicesim"
	"github.com/ocfcloud/ocfcloud/internal/gatewaybench"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// Options size the benchmark. Zero values take the defaults.
type Options struct {
	// Idle is the number of connections that never sign in. Default 10,000.
	Idle int
	// Garbage of them send something hostile first (requests before
	// sign-in, unknown critical options, truncated and oversized frames,
	// malformed options, random bytes). Default Idle/10; negative: none.
	Garbage int
	// Devices are signed in before the flood and keep working through it.
	// Default 4.
	Devices int
	// Before is how long the devices are measured before the flood.
	// Default 5 s.
	Before time.Duration
	// SignInTimeout is the gateway's limit of that name. Default 20 s
	// (the gateway's own default is 60 s; shorter keeps the run short).
	SignInTimeout time.Duration
	// InactivityTimeout is the gateway's limit of that name. Default 20 s
	// (the gateway's default is 60 s; devices ping every 20 s).
	InactivityTimeout time.Duration
	// Hold is how long the flood is kept open after it is established.
	// Default the longer of both timeouts + 10 s.
	Hold time.Duration
	// PingEvery is how often flood connections send a 7.02 Ping, so the
	// gateway's inactivity timeout does not end them. Default 10 s.
	PingEvery time.Duration
	// Concurrency is the number of connections dialled at once. Default 64.
	Concurrency int
	// SourceIPs are the local addresses flood connections dial from.
	// Default 127.0.0.1-127.0.0.254.
	SourceIPs string
	// Spawn starts the backend and the gateway (gatewaybench roles
	// "backend" and "gateway"); default gatewaybench.SpawnSelf, which needs
	// the ocfcloud binary.
	Spawn func(role string, args []string) (*gatewaybench.Process, error)
	// Progress receives a progress line now and then; nil: none.
	Progress io.Writer
}

func (o *Options) setDefaults() {
	if o.Idle == 0 {
		o.Idle = 10_000
	}
	if o.Garbage == 0 {
		o.Garbage = o.Idle / 10
	}
	o.Garbage = min(max(o.Garbage, 0), o.Idle)
	if o.Devices <= 0 {
		o.Devices = 4
	}
	if o.Before <= 0 {
		o.Before = 5 * time.Second
	}
	if o.SignInTimeout == 0 {
		o.SignInTimeout = 20 * time.Second
	}
	if o.InactivityTimeout == 0 {
		o.InactivityTimeout = 20 * time.Second
	}
	if o.Hold <= 0 {
		o.Hold = max(o.SignInTimeout, o.InactivityTimeout, 0) + 10*time.Second
	}
	if o.PingEvery <= 0 {
		o.PingEvery = 10 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.SourceIPs == "" {
		o.SourceIPs = "127.0.0.1-127.0.0.254"
	}
	if o.Spawn == nil {
		o.Spawn = gatewaybench.SpawnSelf
	}
}

// Result holds the figures of a run.
type Result struct {
	Opened, Refused      int
	Alive                int // flood connections open when memory was read
	Base, Flooded, After gatewaybench.Usage
	PeakRSS              int64
	PerConn              Usage
	// Before the flood, while it is dialled, and while it is held open.
	Before, Dialling, Held Phase
	Kinds                  []KindResult
	DialDuration           time.Duration
	SignInTimeout, Hold    time.Duration
	Devices, SourceIPsLen  int
}

// Usage is memory per flood connection.
type Usage struct {
	RSS, Heap, Stack, Goroutines float64
}

// Phase is what the signed-in devices saw before or during the flood.
type Phase struct {
	Requests, Commands latencies
	Duration           time.Duration
}

// KindResult is what the gateway did with one kind of flood connection.
type KindResult struct {
	Name             string
	Count, Closed    int
	MedianCloseAfter time.Duration
}

// kinds of flood connection; the first is the plain idle one.
var kinds = []struct {
	name string
	// first is sent right after connecting; nil: nothing.
	first func() []byte
	// ping: keeps pinging afterwards (false: the frame leaves the stream
	// mid-message, or the gateway closes at once).
	ping bool
}{
	{"idle, pinging", nil, true},
	{"request before sign-in (4.01), pinging", func() []byte { return frame(codes.GET, ocf.PathRes) }, true},
	{"unknown critical option (4.02), pinging", func() []byte {
		return frame(codes.GET, ocf.PathRes, message.Option{ID: 65001, Value: []byte{1}})
	}, true},
	{"truncated frame (8 KiB announced, 100 B sent), then silent", func() []byte {
		// Length nibble 14: 269 + 0x1f00 bytes follow the token.
		return append([]byte{0xe1, 0x1f, 0x00, byte(codes.POST), 0x01}, bytes.Repeat([]byte{0x01}, 100)...)
	}, false},
	{"1 GiB length header", func() []byte { return []byte{0xf1, 0x3f, 0xff, 0xff, 0xff, byte(codes.POST), 0x01} }, false},
	{"option length overrun", func() []byte { return []byte{0x51, byte(codes.GET), 0x09, 0xbd, 200, 'o', 'i', 'c'} }, false},
	{"64 random bytes", func() []byte {
		b := make([]byte, 64)
		_, _ = rand.Read(b)
		return b
	}, false},
}

// Run runs the benchmark and writes a Markdown report to w.
func Run(ctx context.Context, o Options, w io.Writer) (*Result, error) {
	o.setDefaults()
	ips, err := devicesim.ParseSourceIPs(o.SourceIPs)
	if err != nil {
		return nil, err
	}
	be, err := gatewaybench.StartBackend(ctx, o.Spawn)
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	defer be.Close()
	args := append(be.GatewayArgs(), "--sign-in-timeout", o.SignInTimeout.String(), "--inactivity-timeout", o.InactivityTimeout.String())
	gw, err := o.Spawn("gateway", args)
	if err != nil {
		return nil, fmt.Errorf("gateway process: %w", err)
	}
	defer gw.Stop()
	nc, err := nats.Connect(be.NATSURL())
	if err != nil {
		return nil, err
	}
	defer nc.Close()

	r := &Result{SignInTimeout: o.SignInTimeout, Hold: o.Hold, Devices: o.Devices, SourceIPsLen: len(ips)}
	devs := make([]*device, o.Devices)
	for i := range devs {
		if devs[i], err = startDevice(ctx, gw.Addr); err != nil {
			return nil, fmt.Errorf("signed-in device: %w", err)
		}
		defer devs[i].cc.Close()
	}
	pr := startProbes(devs, commands.NewClient(nc))
	defer pr.stop()

	progress(o.Progress, "measuring the signed-in devices for %v", o.Before)
	time.Sleep(o.Before)
	if r.Base, err = gw.RSSAfterGC(); err != nil {
		return nil, err
	}
	r.Before = pr.next() // from here on: while the flood is dialled

	stopPeak := samplePeak(gw, &r.PeakRSS)
	f := newFlood(o, ips)
	defer f.close()
	t0 := time.Now()
	f.open(ctx, gw.Addr)
	r.DialDuration = time.Since(t0)
	r.Dialling = pr.next() // from here on: while the flood is held
	r.Opened, r.Refused = f.opened(), f.refused()
	if r.Flooded, err = gw.RSSAfterGC(); err != nil {
		return nil, err
	}
	// Per connection the gateway still holds: some garbage is closed at once.
	r.Alive = f.stillOpen()
	if n := float64(r.Alive); n > 0 {
		r.PerConn = Usage{
			RSS:        float64(r.Flooded.RSS-r.Base.RSS) / n,
			Heap:       float64(r.Flooded.Heap-r.Base.Heap) / n,
			Stack:      float64(r.Flooded.Stack-r.Base.Stack) / n,
			Goroutines: float64(r.Flooded.Goroutines-r.Base.Goroutines) / n,
		}
	}
	go f.ping(o.PingEvery)
	holdUntil := t0.Add(o.Hold)
	for time.Now().Before(holdUntil) && ctx.Err() == nil {
		progress(o.Progress, "flood held: %d of %d flood connections still open, %v left", f.stillOpen(), r.Opened, time.Until(holdUntil).Round(time.Second))
		time.Sleep(min(time.Second, time.Until(holdUntil)))
	}
	r.Held = pr.next()
	stopPeak()
	r.Kinds = f.results()
	if r.After, err = gw.RSSAfterGC(); err != nil {
		return nil, err
	}
	progress(o.Progress, "")
	r.write(w, o)
	errs := 0
	for _, ph := range []*Phase{&r.Before, &r.Dialling, &r.Held} {
		errs += ph.Requests.errors + ph.Commands.errors
	}
	if errs > 0 {
		return r, fmt.Errorf("signed-in devices: %d failed requests or commands", errs)
	}
	if r.Held.Requests.n() == 0 || r.Held.Commands.n() == 0 {
		return r, errors.New("signed-in devices were not served while the flood was held")
	}
	return r, nil
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, "  %-90s\r", fmt.Sprintf(format, args...))
	}
}

// samplePeak records the highest RSS of p until the returned function is called.
func samplePeak(p *gatewaybench.Process, peak *int64) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := p.RSS(); err == nil && v > *peak {
				*peak = v
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(stop); <-done }
}

func (r *Result) write(w io.Writer, o Options) {
	mb := func(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }
	fmt.Fprintf(w, "ocfcloud CoAP flood benchmark: %s, GOMAXPROCS %d (%d CPUs); %d connections that never sign in (%d with garbage) from %d source addresses; %d signed-in devices; gateway SignInTimeout %v, InactivityTimeout %v; flood pings every %v and is held %v\n\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), o.Idle, o.Garbage, r.SourceIPsLen, r.Devices, r.SignInTimeout, o.InactivityTimeout, o.PingEvery, r.Hold)
	fmt.Fprintf(w, "| gateway process | RSS | Go heap | stacks | goroutines |\n|---|---|---|---|---|\n")
	row := func(name string, u gatewaybench.Usage) {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d |\n", name, mb(u.RSS), mb(u.Heap), mb(u.Stack), u.Goroutines)
	}
	row("before the flood (signed-in devices only), after GC", r.Base)
	row(fmt.Sprintf("flood open (%d connections dialled in %v, %d refused; %d still open), after GC", r.Opened, r.DialDuration.Round(time.Millisecond), r.Refused, r.Alive), r.Flooded)
	fmt.Fprintf(w, "| per open flood connection | %.1f KB | %.1f KB | %.1f KB | %.2f |\n", r.PerConn.RSS/1024, r.PerConn.Heap/1024, r.PerConn.Stack/1024, r.PerConn.Goroutines)
	fmt.Fprintf(w, "| peak during the flood (no GC) | %s | | | |\n", mb(r.PeakRSS))
	row("end of the hold, after GC", r.After)

	fmt.Fprintf(w, "\n| signed-in devices | phase | answered (rate) | errors | p50 | p99 | p99 / before |\n|---|---|---|---|---|---|---|\n")
	lat := func(name string, pick func(*Phase) *latencies) {
		base := pick(&r.Before).quantile(0.99)
		for _, ph := range []struct {
			name string
			p    *Phase
		}{{"before the flood", &r.Before}, {"flood being dialled", &r.Dialling}, {"flood held open", &r.Held}} {
			l := pick(ph.p)
			ratio := "n/a"
			if base > 0 && l.n() > 0 {
				ratio = fmt.Sprintf("%.2f", float64(l.quantile(0.99))/float64(base))
			}
			fmt.Fprintf(w, "| %s | %s | %d (%.0f/s) | %d | %v | %v | %s |\n", name, ph.name,
				l.n(), float64(l.n())/ph.p.Duration.Seconds(), l.errors, l.quantile(0.5), l.quantile(0.99), ratio)
		}
	}
	lat("device → gateway (GET /oic/res)", func(p *Phase) *latencies { return &p.Requests })
	lat("cloud → device command (NATS, GET /light/1)", func(p *Phase) *latencies { return &p.Commands })

	fmt.Fprintf(w, "\n| flood connections | count | closed by the gateway during the hold | median time to close |\n|---|---|---|---|\n")
	for _, k := range r.Kinds {
		med := "-"
		if k.Closed > 0 {
			med = k.MedianCloseAfter.Round(10 * time.Millisecond).String()
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s |\n", k.Name, k.Count, k.Closed, med)
	}
	fmt.Fprintln(w)
}

// latencies of successful operations, and a count of failed ones.
type latencies struct {
	d      []time.Duration
	errors int
}

func (l *latencies) n() int { return len(l.d) }

func (l *latencies) quantile(q float64) time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)].Round(time.Microsecond)
}

// probes run every signed-in device in a loop: a request to the gateway,
// then a command from the cloud to the device.
type probes struct {
	mu      sync.Mutex
	cur     Phase
	started time.Time
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func startProbes(devs []*device, cmds *commands.Client) *probes {
	ctx, cancel := context.WithCancel(context.Background())
	p := &probes{cancel: cancel, started: time.Now()}
	for _, d := range devs {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
				resp, err := d.cc.Get(rctx, ocf.PathRes, ocfOptions()...)
				rcancel()
				ok := err == nil && resp.Code() == codes.Content
				p.record(ctx, func(ph *Phase) *latencies { return &ph.Requests }, t0, ok)
				t0 = time.Now()
				rctx, rcancel = context.WithTimeout(ctx, 10*time.Second)
				cr, err := cmds.Do(rctx, d.di, &commands.Request{Method: commands.MethodGet, Href: "/light/1"})
				rcancel()
				p.record(ctx, func(ph *Phase) *latencies { return &ph.Commands }, t0, err == nil && cr.Code == "2.05")
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	return p
}

func (p *probes) record(ctx context.Context, which func(*Phase) *latencies, t0 time.Time, ok bool) {
	if ctx.Err() != nil {
		return // stopped, not failed
	}
	d := time.Since(t0)
	p.mu.Lock()
	defer p.mu.Unlock()
	l := which(&p.cur)
	if ok {
		l.d = append(l.d, d)
	} else {
		l.errors++
	}
}

// next ends the current phase, returns it and starts the next one.
func (p *probes) next() Phase {
	p.mu.Lock()
	defer p.mu.Unlock()
	ph := p.cur
	ph.Duration = time.Since(p.started)
	p.cur, p.started = Phase{}, time.Now()
	return ph
}

func (p *probes) stop() { p.cancel(); p.wg.Wait() }

// device is a signed-in device with a light.
type device struct {
	di string
	cc *client.Conn
}

var lightRep, _ = ocf.Marshal(map[string]any{"state": false, "power": 0})

func startDevice(ctx context.Context, addr string) (*device, error) {
	router := mux.NewRouter()
	router.DefaultHandle(mux.HandlerFunc(func(w mux.ResponseWriter, r *mux.Message) {
		if r.Code() == codes.GET {
			_ = w.SetResponse(codes.Content, ocf.ContentFormatCBOR, bytes.NewReader(lightRep))
		}
	}))
	cc, err := tcp.Dial(addr,
		options.WithContext(ctx),
		options.WithMux(router),
		options.WithErrors(func(error) {}),
		options.WithDisableTCPSignalMessageCSM(),
		options.WithLimitClientParallelRequest(0),
		options.WithLimitClientEndpointParallelRequest(0),
	)
	if err != nil {
		return nil, err
	}
	d := &device{di: devicesim.NewDeviceID(), cc: cc}
	var up ocf.SignUpResponse
	if err := d.post(ctx, ocf.PathAccount, ocf.SignUpRequest{DeviceID: d.di, AuthProvider: "ocfcloud", AccessToken: "code-" + d.di, DeviceType: "device"}, &up); err != nil {
		cc.Close()
		return nil, err
	}
	if err := d.post(ctx, ocf.PathSession, ocf.SessionRequest{DeviceID: d.di, UserID: up.UserID, AccessToken: up.AccessToken, Login: true}, nil); err != nil {
		cc.Close()
		return nil, err
	}
	if err := d.post(ctx, ocf.PathRD, ocf.PublishRequest{DeviceID: d.di, Links: []ocf.Link{{Href: "/light/1", RT: []string{"core.light"}, Policy: &ocf.Policy{BitMask: 3}}}}, nil); err != nil {
		cc.Close()
		return nil, err
	}
	return d, nil
}

func (d *device) post(ctx context.Context, path string, body, out any) error {
	data, err := ocf.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := d.cc.Post(ctx, path, ocf.ContentFormatCBOR, bytes.NewReader(data), ocfOptions()...)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	if resp.Code() != codes.Changed {
		diag, _ := resp.ReadBody()
		return fmt.Errorf("POST %s: %v %s", path, resp.Code(), diag)
	}
	if out == nil {
		return nil
	}
	b, err := resp.ReadBody()
	if err != nil {
		return err
	}
	return ocf.Unmarshal(b, out)
}

func ocfOptions() []message.Option {
	v := ocf.Uint16Bytes(uint16(ocf.Version1))
	return []message.Option{
		{ID: message.Accept, Value: ocf.Uint16Bytes(uint16(ocf.ContentFormatCBOR))},
		{ID: ocf.OptionAcceptVersion, Value: v},
		{ID: ocf.OptionContentVersion, Value: v},
	}
}

var tokenSeq atomic.Uint64

// frame is a request to path with the OCF options and extra, in option order.
func frame(code codes.Code, path string, extra ...message.Option) []byte {
	opts := message.Options{}
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		opts = append(opts, message.Option{ID: message.URIPath, Value: []byte(seg)})
	}
	opts = append(opts, ocfOptions()...)
	opts = append(opts, extra...)
	slices.SortStableFunc(opts, func(a, b message.Option) int { return int(a.ID) - int(b.ID) })
	tok := fmt.Appendf(nil, "%08d", tokenSeq.Add(1)%100_000_000)
	return encode(message.Message{Code: code, Token: tok, Options: opts})
}

func encode(m message.Message) []byte {
	size, _ := coder.DefaultCoder.Size(m)
	buf := make([]byte, size)
	n, err := coder.DefaultCoder.Encode(m, buf)
	if err != nil {
		panic(err)
	}
	return buf[:n]
}

var pingFrame = encode(message.Message{Code: codes.Ping, Token: []byte("ping")})

// flood holds the connections that never sign in.
type flood struct {
	o     Options
	ips   []netip.Addr
	conns []*floodConn
	nRef  atomic.Int64
}

type floodConn struct {
	kind     int
	conn     net.Conn
	openedAt time.Time
	closedAt atomic.Int64 // unix nanoseconds when the gateway closed it
	done     chan struct{}
	mine     atomic.Bool // closed by the benchmark, not the gateway
}

func newFlood(o Options, ips []netip.Addr) *flood {
	return &flood{o: o, ips: ips, conns: make([]*floodConn, o.Idle)}
}

// kindOf spreads the garbage kinds over the first Garbage connections.
func (f *flood) kindOf(i int) int {
	if i >= f.o.Garbage {
		return 0
	}
	return 1 + i%(len(kinds)-1)
}

func (f *flood) open(ctx context.Context, addr string) {
	var next, done atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
				progress(f.o.Progress, "flood: %d/%d connections", done.Load(), f.o.Idle)
			}
		}
	}()
	for range f.o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(f.conns) {
					return
				}
				f.dial(addr, i)
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
}

func (f *flood) dial(addr string, i int) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: f.ips[i%len(f.ips)].AsSlice()}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		f.nRef.Add(1)
		return
	}
	c := &floodConn{kind: f.kindOf(i), conn: conn, openedAt: time.Now(), done: make(chan struct{})}
	// Admitted connections get the gateway's CSM first; refused ones are
	// closed at once.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(make([]byte, 64)); n == 0 || err != nil {
		f.nRef.Add(1)
		_ = conn.Close()
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	if first := kinds[c.kind].first; first != nil {
		_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = conn.Write(first())
	}
	f.conns[i] = c
	go c.read()
}

// read discards what the gateway sends and notes when it closes.
func (c *floodConn) read() {
	defer close(c.done)
	buf := make([]byte, 512)
	for {
		if _, err := c.conn.Read(buf); err != nil {
			if !c.mine.Load() {
				c.closedAt.Store(time.Now().UnixNano())
			}
			return
		}
	}
}

// ping keeps pinging connections whose kind pings, spread over every period.
func (f *flood) ping(every time.Duration) {
	for {
		start := time.Now()
		alive := 0
		for _, c := range f.conns {
			if c == nil || !kinds[c.kind].ping || c.mine.Load() {
				continue
			}
			select {
			case <-c.done:
				continue
			default:
			}
			alive++
			_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.conn.Write(pingFrame)
		}
		if alive == 0 {
			return
		}
		time.Sleep(every - time.Since(start))
	}
}

func (f *flood) opened() int {
	n := 0
	for _, c := range f.conns {
		if c != nil {
			n++
		}
	}
	return n
}

// stillOpen counts flood connections the gateway has not closed.
func (f *flood) stillOpen() int {
	n := 0
	for _, c := range f.conns {
		if c != nil && c.closedAt.Load() == 0 {
			n++
		}
	}
	return n
}

func (f *flood) refused() int { return int(f.nRef.Load()) }

func (f *flood) results() []KindResult {
	out := make([]KindResult, len(kinds))
	after := make([][]time.Duration, len(kinds))
	for i, k := range kinds {
		out[i].Name = k.name
	}
	for _, c := range f.conns {
		if c == nil {
			continue
		}
		out[c.kind].Count++
		if at := c.closedAt.Load(); at != 0 {
			out[c.kind].Closed++
			after[c.kind] = append(after[c.kind], time.Unix(0, at).Sub(c.openedAt))
		}
	}
	for i := range out {
		if len(after[i]) > 0 {
			slices.Sort(after[i])
			out[i].MedianCloseAfter = after[i][len(after[i])/2]
		}
	}
	return out
}

func (f *flood) close() {
	for _, c := range f.conns {
		if c != nil {
			c.mine.Store(true)
			_ = c.conn.Close()
		}
	}
	for _, c := range f.conns {
		if c != nil {
			<-c.done
		}
	}
}
