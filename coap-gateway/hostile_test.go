package coapgateway_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/tcp/coder"

	coapgateway "github.com/ocfcloud/ocfcloud/coap-gateway"
	"github.com/ocfcloud/ocfcloud/internal/commands"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// Hostile peers (issue 11): each attack runs on real sockets against a whole
// cloud while a signed-in device keeps working, and each has its own pass
// condition. Bounds are generous; nothing here asserts how fast anything is.

const hostileMaxMessage = 16 << 10

// hostileLimits are small enough that the attacks hit them quickly.
var hostileLimits = coapgateway.Limits{
	ConnRatePerIP:     -1, // one process dials every attacker
	MaxMessageSize:    hostileMaxMessage,
	InactivityTimeout: 5 * time.Second,
	WriteTimeout:      2 * time.Second,
}

func TestSignedInDeviceKeepsWorkingUnderHostileInput(t *testing.T) {
	c := startTestCloud(t, withLimits(hostileLimits))
	addr := c.coapAddr()
	good := startProber(t, c)
	good.expectProgress(t, 3, "before any attack")
	baseGoroutines := runtime.NumGoroutine()

	t.Run("frames larger than the max message size close the connection", func(t *testing.T) {
		// The largest message allowed is answered...
		p := dialPeer(t, addr, nil)
		at := p.sized(hostileMaxMessage)
		if m := p.request(at); m.Code != codes.BadRequest {
			t.Fatalf("message of exactly MaxMessageSize: %v %q, want 4.00 (garbage sign-up)", m.Code, m.Payload)
		}
		// ...one byte more is not; nor a header claiming a gigabyte that
		// never comes (the gateway must not allocate what it claims).
		var peers []*peer
		for i := range 10 {
			p := dialPeer(t, addr, nil)
			if i%2 == 0 {
				p.send(p.sized(hostileMaxMessage + 1))
			} else {
				p.send([]byte{0xf1, 0x3f, 0xff, 0xff, 0xff, byte(codes.POST), 0x01})
			}
			peers = append(peers, p)
		}
		for _, p := range peers {
			p.expectClosed(t, 10*time.Second)
			p.expectNoAnswers(t)
		}
		good.expectProgress(t, 3, "after oversized frames")
	})

	t.Run("truncated frames never reach a handler and their connection ends", func(t *testing.T) {
		frame := garbageSignUp(newToken(), 8<<10)
		hangUp := dialPeer(t, addr, nil) // sends half, then closes its side
		hangUp.send(frame[:len(frame)/2])
		_ = hangUp.conn.(*net.TCPConn).CloseWrite()
		stall := dialPeer(t, addr, nil) // sends half, then nothing
		stall.send(frame[:len(frame)/2])
		header := dialPeer(t, addr, nil) // an extended length byte that never comes
		header.send([]byte{0xd1})
		for _, p := range []*peer{hangUp, stall, header} {
			// A stalled frame is no activity: InactivityTimeout ends it.
			p.expectClosed(t, hostileLimits.InactivityTimeout+10*time.Second)
			p.expectNoAnswers(t)
		}
		good.expectProgress(t, 3, "after truncated frames")
	})

	t.Run("a stalled frame costs at most twice MaxMessageSize", func(t *testing.T) {
		// The worst a peer can do to memory without finishing a frame:
		// announce the largest frame, send all of it but the last bytes.
		const n = 50
		heap0 := heapAfterGC()
		var peers []*peer
		for range n {
			p := dialPeer(t, addr, nil)
			frame := p.sized(hostileMaxMessage)
			p.send(frame[:len(frame)-1])
			peers = append(peers, p)
		}
		// Behaviour, not time: wait until the gateway holds what was sent.
		var grew int64
		waitFor(t, "the gateway to buffer the partial frames", 20*time.Second, func() bool {
			grew = heapAfterGC() - heap0
			return grew >= n*hostileMaxMessage*9/10
		})
		t.Logf("%d stalled frames of %d KiB: Go heap %+.1f KiB each", n, hostileMaxMessage>>10, float64(grew)/n/1024)
		if grew > n*2*hostileMaxMessage {
			t.Errorf("Go heap grew %d bytes per stalled frame of %d, want at most twice the frame", grew/n, hostileMaxMessage)
		}
		for _, p := range peers {
			p.expectClosed(t, hostileLimits.InactivityTimeout+10*time.Second)
			p.expectNoAnswers(t)
		}
		good.expectProgress(t, 3, "after stalled frames")
	})

	t.Run("bad options get the answer RFC 7252 prescribes", func(t *testing.T) {
		p := dialPeer(t, addr, nil)
		res := func(extra ...message.Option) []byte {
			return coapFrame(codes.GET, newToken(), requestOptions(ocf.PathRes, extra...), nil)
		}
		// §5.4.1: an unrecognized critical (odd) option in a request is
		// 4.02 Bad Option; an unrecognized elective (even) one is ignored.
		if m := p.request(res(message.Option{ID: 65001, Value: []byte{1}})); m.Code != codes.BadOption || !strings.Contains(string(m.Payload), "65001") {
			t.Errorf("unknown critical option: %v %q, want 4.02 naming 65001", m.Code, m.Payload)
		}
		if m := p.request(res(message.Option{ID: 65000, Value: []byte{1}})); m.Code != codes.Unauthorized {
			t.Errorf("unknown elective option: %v %q, want it ignored (4.01 before sign-in)", m.Code, m.Payload)
		}
		// §5.4.3: a value length outside the option's range is treated
		// like an unrecognized option: critical Accept (17) and OCF
		// Accept-Version (2049) take at most 2 bytes.
		for _, id := range []message.OptionID{message.Accept, ocf.OptionAcceptVersion} {
			if m := p.request(res(message.Option{ID: id, Value: []byte{1, 2, 3}})); m.Code != codes.BadOption {
				t.Errorf("option %d with 3 bytes: %v %q, want 4.02", id, m.Code, m.Payload)
			}
		}
		// §5.4.5: a supernumerary occurrence of a non-repeatable option is
		// treated like an unrecognized option; for critical Uri-Host (3)
		// that is 4.02. go-coap does not check repetition: see
		// TestRepeatedCriticalOptionIsBadOption.
		//
		// The connection still serves after all that.
		if m := p.request(res()); m.Code != codes.Unauthorized {
			t.Fatalf("after bad options: %v", m.Code)
		}

		// Format errors (RFC 7252 §3, RFC 8323 §3.2): the frame's own
		// fields cannot be trusted and TCP has no Reset, so the connection
		// ends without an answer. Each on its own connection.
		tok := []byte{9}
		for name, frame := range map[string][]byte{
			// Uri-Path claiming 213 bytes with 3 left in the frame.
			"option length overrun": {0x51, byte(codes.GET), tok[0], 0xbd, 200, 'o', 'i', 'c'},
			// Option delta nibble 15 is reserved unless it is the payload marker.
			"reserved option delta": {0x21, byte(codes.GET), tok[0], 0xf1, 'x'},
			// Token length nibble 9..15 is reserved.
			"reserved token length": {0x09, byte(codes.GET), 1, 2, 3, 4, 5, 6, 7, 8, 9},
			// A payload marker with no payload after it.
			"empty payload after marker": {0x11, byte(codes.GET), tok[0], 0xff},
		} {
			bad := dialPeer(t, addr, nil)
			bad.send(frame)
			// A ping after the frame: a pong means the gateway read past
			// the bad frame and kept going (allowed only for the empty
			// payload, which go-coap accepts as no payload).
			bad.send(coapFrame(codes.Ping, []byte("ping"), nil, nil))
			if bad.waitClosedOrPong(t, 10*time.Second) {
				if name != "empty payload after marker" {
					t.Errorf("%s: connection kept", name)
				}
				continue
			}
			if n := bad.answers(); n != 0 {
				t.Errorf("%s: %d answers to a malformed frame", name, n)
			}
		}
		good.expectProgress(t, 3, "after bad options")
	})

	t.Run("token flood before sign-in is answered and bounded", func(t *testing.T) {
		p := dialPeer(t, addr, nil)
		const n = 3000
		peak := watchGoroutines()
		p.flood(n, func(tok []byte) []byte { return coapFrame(codes.GET, tok, requestOptions(ocf.PathRes), nil) })
		p.expectEveryTokenAnswered(t, n, codes.Unauthorized, codes.ServiceUnavailable)
		if grew := peak() - baseGoroutines; grew > 200 {
			t.Errorf("goroutines grew by %d during a flood of %d requests on one connection", grew, n)
		}
		// Stray answers to requests the gateway never sent: ignored.
		for range 1000 {
			p.send(coapFrame(codes.Content, newToken(), nil, []byte("stray")))
		}
		before := p.answers()
		p.send(coapFrame(codes.Ping, []byte("ping"), nil, nil))
		if !p.waitClosedOrPong(t, 10*time.Second) {
			t.Fatal("connection closed by stray answers")
		}
		if after := p.answers(); after != before {
			t.Errorf("the gateway answered %d stray answers", after-before)
		}
		good.expectProgress(t, 3, "after a token flood before sign-in")
	})

	t.Run("token flood after sign-in is answered and bounded", func(t *testing.T) {
		p := dialPeer(t, addr, nil)
		p.onboard(t, c, "3f1e2d3c-4b5a-4697-8a8b-9c0d1e2f3a4b", nil)
		const n = 3000
		peak := watchGoroutines()
		p.flood(n, func(tok []byte) []byte { return coapFrame(codes.GET, tok, requestOptions(ocf.PathRes), nil) })
		p.expectEveryTokenAnswered(t, n, codes.Content, codes.ServiceUnavailable)
		if grew := peak() - baseGoroutines; grew > 200 {
			t.Errorf("goroutines grew by %d during a flood of %d requests on one connection", grew, n)
		}
		good.expectProgress(t, 3, "after a token flood after sign-in")
	})

	t.Run("a device that stops reading is dropped without holding others", func(t *testing.T) {
		stopReading(t, c, "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d", good)
		good.expectProgress(t, 3, "after a device stopped reading")
	})

	t.Run("connections that never sign in cost little and are dropped", func(t *testing.T) {
		const n = 1000
		heap0 := heapAfterGC()
		g0 := runtime.NumGoroutine()
		peers := make([]*peer, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// From 127.0.0.1-10: no one address needs all the ports.
				src := netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i%10)})
				p, err := dialPeerErr(addr, src, nil)
				if err != nil {
					errs <- err
					return
				}
				peers[i] = p
				if !p.waitCSM(10 * time.Second) {
					errs <- fmt.Errorf("connection %d got no CSM", i)
				}
			}()
		}
		wg.Wait()
		t.Cleanup(func() {
			for _, p := range peers {
				if p != nil {
					_ = p.conn.Close()
				}
			}
		})
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		good.expectProgress(t, 3, "with 1000 idle connections")
		perConn := (heapAfterGC() - heap0) / n
		// One goroutine per connection is the test's reader.
		goroutines := float64(runtime.NumGoroutine()-g0-n) / n
		t.Logf("%d idle connections: Go heap %+.1f KB each (both ends), %.1f gateway goroutines each", n, float64(perConn)/1024, goroutines)
		if perConn > 64<<10 {
			t.Errorf("Go heap grew %d bytes per idle connection, want < 64 KiB", perConn)
		}
		if goroutines > 2.5 {
			t.Errorf("%.1f gateway goroutines per idle connection, want <= 2", goroutines)
		}
		// They send nothing, so InactivityTimeout ends them all.
		for _, p := range peers {
			p.expectClosed(t, hostileLimits.InactivityTimeout+20*time.Second)
		}
		good.expectProgress(t, 3, "after the idle connections")
	})

	// Nothing the attacks started outlives them.
	waitFor(t, "goroutines back to the level before the attacks", 30*time.Second, func() bool {
		return runtime.NumGoroutine() <= baseGoroutines+50
	})
	good.stop(t)
}

// The gateway drops a device that stops reading on WriteTimeout alone: the
// inactivity timeout is out of reach here.
func TestDeviceThatStopsReadingIsDroppedByTheWriteTimeout(t *testing.T) {
	c := startTestCloud(t, withLimits(coapgateway.Limits{ConnRatePerIP: -1, InactivityTimeout: time.Hour, WriteTimeout: time.Second}))
	good := startProber(t, c)
	stopReading(t, c, "7c6b5a49-3827-4161-9504-f3e2d1c0b9a8", good)
	good.expectProgress(t, 3, "after a device stopped reading")
	good.stop(t)
}

// A connection that pings but never signs in is closed at SignInTimeout, and
// so is one to the TLS port that never starts its handshake (it blocks
// before the connection is watched for inactivity); a device that signed in
// on time is not.
func TestConnectionThatNeverSignsInIsClosedAtTheDeadline(t *testing.T) {
	c := startTestCloud(t, withLimits(coapgateway.Limits{ConnRatePerIP: -1, InactivityTimeout: time.Hour, SignInTimeout: 2 * time.Second}))
	signedIn := dialPeer(t, c.coapAddr(), nil)
	signedIn.onboard(t, c, "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901", nil)
	pinger := dialPeer(t, c.coapAddr(), nil)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				pinger.send(coapFrame(codes.Ping, []byte("ping"), nil, nil))
			}
		}
	}()
	silentTLS := dialPeer(t, c.coapsAddr(), nil)
	pinger.expectClosed(t, 30*time.Second)
	silentTLS.expectClosed(t, 30*time.Second)
	if pinger.pongs() == 0 {
		t.Fatal("the pinging connection was never answered: it was not alive before the deadline")
	}
	// Still answered after its own deadline passed.
	if m := signedIn.request(coapFrame(codes.GET, newToken(), requestOptions(ocf.PathRes), nil)); m.Code != codes.Content {
		t.Fatalf("signed-in device after the deadline: %v", m.Code)
	}
	// Signing out starts the deadline again.
	out, _ := ocf.Marshal(ocf.SessionRequest{Login: false})
	if m := signedIn.request(coapFrame(codes.POST, newToken(), requestOptions(ocf.PathSession, message.Option{ID: message.ContentFormat, Value: ocf.Uint16Bytes(uint16(ocf.ContentFormatCBOR))}), out)); m.Code != codes.Changed {
		t.Fatalf("sign-out: %v %q", m.Code, m.Payload)
	}
	signedIn.expectClosed(t, 30*time.Second)
}

// RFC 7252 §5.4.5: a repeated non-repeatable critical option is treated
// like an unrecognized one: 4.02. go-coap v3.8.0 takes the first occurrence
// and the request goes on.
func TestRepeatedCriticalOptionIsBadOption(t *testing.T) {
	p := dialPeer(t, startBareGateway(t, coapgateway.Limits{ConnRatePerIP: -1}), nil)
	res := func(extra ...message.Option) coapMsg {
		return p.request(coapFrame(codes.GET, newToken(), requestOptions(ocf.PathRes, extra...), nil))
	}
	host := message.Option{ID: message.URIHost, Value: []byte("a")}
	if m := res(host, host); m.Code != codes.BadOption {
		t.Errorf("Uri-Host twice: %v %q, want 4.02", m.Code, m.Payload)
	}
	// requestOptions already has one Accept.
	if m := res(message.Option{ID: message.Accept, Value: ocf.Uint16Bytes(uint16(ocf.ContentFormatCBOR))}); m.Code != codes.BadOption {
		t.Errorf("Accept twice: %v %q, want 4.02", m.Code, m.Payload)
	}
	// An elective one repeated is ignored, and repeatable ones are fine.
	cf := message.Option{ID: message.ContentFormat, Value: ocf.Uint16Bytes(uint16(ocf.ContentFormatCBOR))}
	if m := res(cf, cf, message.Option{ID: message.URIQuery, Value: []byte("a=1")}, message.Option{ID: message.URIQuery, Value: []byte("b=2")}); m.Code != codes.Unauthorized {
		t.Errorf("Content-Format and Uri-Query twice: %v %q, want 4.01 (before sign-in)", m.Code, m.Payload)
	}
}

// stopReading onboards a device on a socket with a tiny receive buffer,
// publishes enough links that each /oic/res answer is large, then sends
// requests without reading a byte until its own writes block (the gateway
// stopped reading it) or fail. Pass: the gateway closes the connection, the
// device goes offline, and the prober saw no failure meanwhile.
func stopReading(t *testing.T, c *testCloud, di string, good *prober) {
	t.Helper()
	p := dialPeer(t, c.coapAddr(), smallReceiveBuffer)
	links := make([]ocf.Link, 32)
	for i := range links {
		links[i] = ocf.Link{Href: fmt.Sprintf("/r/%d/%s", i, strings.Repeat("x", 200)), RT: []string{"x.slow"}}
	}
	p.onboard(t, c, di, links)
	waitFor(t, "slow device online", 10*time.Second, func() bool { _, st := c.deviceStatus(di); return st == "online" })
	p.stopReading()
	// Each request carries a padding payload (ignored by GET): loopback
	// buffers grow to megabytes, and fewer, larger writes fill them sooner.
	pad := bytes.Repeat([]byte{0}, 1024)
	sent := 0
	for {
		_ = p.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, err := p.conn.Write(coapFrame(codes.GET, newToken(), requestOptions(ocf.PathRes), pad))
		if err != nil {
			// A timeout: the gateway no longer reads this socket; any
			// other error: it has already dropped it.
			t.Logf("slow reader: %d requests sent, then %v", sent, err)
			break
		}
		sent++
		if sent > 200_000 {
			t.Fatal("200 MB of requests sent without backpressure")
		}
	}
	good.expectProgress(t, 3, "while a device does not read")
	// A command to the stuck device ends (an error or a timeout) instead of
	// hanging the caller; what matters is that it returns.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := c.client.Do(ctx, di, &commands.Request{Method: commands.MethodGet, Href: "/r/0", TimeoutMillis: 1000})
	cancel()
	if err == nil {
		t.Error("a command to a device that does not read succeeded")
	}
	p.resumeReading()
	p.expectClosed(t, 60*time.Second)
	waitFor(t, "slow device offline", 20*time.Second, func() bool { _, st := c.deviceStatus(di); return st == "offline" })
}

// prober is a signed-in device that works all the time: it asks the cloud
// for its links and the cloud sends it a command, in a loop. Any failure is
// kept; expectProgress waits for more successful rounds.
type prober struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	cancel     context.CancelFunc
	done       chan struct{}
}

func startProber(t *testing.T, c *testCloud) *prober {
	t.Helper()
	cc, err := dialRaw(t, c.coapAddr(), nil, func(w mux.ResponseWriter, r *mux.Message) {
		if p, _ := r.Options().Path(); p == "/light/1" && r.Code() == codes.GET {
			body, _ := ocf.Marshal(map[string]any{"state": true})
			_ = w.SetResponse(codes.Content, ocf.ContentFormatCBOR, bytes.NewReader(body))
			return
		}
		_ = w.SetResponse(codes.NotFound, 0, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	const di = "0e9d8c7b-6a59-4847-8362-514f3e2d1c0b"
	c.onboardRaw(cc, di)
	pr := &prober{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	pr.cancel = cancel
	fail := func(err error) {
		pr.failed.Add(1)
		pr.firstErr.CompareAndSwap(nil, err)
	}
	go func() {
		defer close(pr.done)
		for ctx.Err() == nil {
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := cc.Get(rctx, ocf.PathRes, ocfOpts()...)
			rcancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil || resp.Code() != codes.Content {
				fail(fmt.Errorf("device request: %v", err))
				continue
			}
			rctx, rcancel = context.WithTimeout(ctx, 10*time.Second)
			cmd, err := c.client.Do(rctx, di, &commands.Request{Method: commands.MethodGet, Href: "/light/1"})
			rcancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil || cmd.Code != "2.05" {
				fail(fmt.Errorf("command: %+v %v", cmd, err))
				continue
			}
			pr.ok.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); <-pr.done })
	return pr
}

// expectProgress waits for n more successful rounds and fails on any failed one.
func (p *prober) expectProgress(t *testing.T, n int64, when string) {
	t.Helper()
	target := p.ok.Load() + n
	deadline := time.Now().Add(30 * time.Second)
	for p.ok.Load() < target && p.failed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if f := p.failed.Load(); f > 0 {
		t.Fatalf("signed-in device %s: %d failed rounds, first: %v", when, f, p.firstErr.Load())
	}
	if p.ok.Load() < target {
		t.Fatalf("signed-in device %s: no %d rounds within 30 s", when, n)
	}
}

func (p *prober) stop(t *testing.T) {
	t.Helper()
	p.cancel()
	<-p.done
	if f := p.failed.Load(); f > 0 {
		t.Fatalf("signed-in device: %d failed rounds, first: %v", f, p.firstErr.Load())
	}
}

// peer is a hand-written CoAP-over-TCP peer: it sends whatever bytes it is
// given and decodes what the gateway sends back.
type peer struct {
	conn net.Conn

	mu       sync.Mutex
	got      map[string]coapMsg // answers by token
	nAnswers int
	nPongs   int
	csm      bool
	closed   bool
	readErr  error

	paused chan struct{} // closed: read; open: do not read
	done   chan struct{}
}

type coapMsg struct {
	Code    codes.Code
	Token   string
	Payload []byte
}

func dialPeer(t *testing.T, addr string, control func(string, string, syscall.RawConn) error) *peer {
	t.Helper()
	p, err := dialPeerErr(addr, netip.Addr{}, control)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.conn.Close() })
	return p
}

func dialPeerErr(addr string, src netip.Addr, control func(string, string, syscall.RawConn) error) (*peer, error) {
	d := net.Dialer{Timeout: 10 * time.Second, Control: control}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &peer{conn: conn, got: map[string]coapMsg{}, paused: make(chan struct{}), done: make(chan struct{})}
	close(p.paused)
	go p.read()
	return p, nil
}

// smallReceiveBuffer makes the peer's TCP window tiny, so a gateway that
// writes to a peer that does not read blocks after a few kilobytes.
func smallReceiveBuffer(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	})
	return errors.Join(err, serr)
}

func (p *peer) read() {
	defer close(p.done)
	var buf []byte
	chunk := make([]byte, 2<<10)
	for {
		p.mu.Lock()
		paused := p.paused
		p.mu.Unlock()
		<-paused
		n, err := p.conn.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for {
			var h coder.MessageHeader
			if _, herr := coder.DefaultCoder.DecodeHeader(buf, &h); herr != nil || uint32(len(buf)) < h.MessageLength {
				break
			}
			m := message.Message{Options: make(message.Options, 0, 16)} // Unmarshal fills capacity
			if _, derr := coder.DefaultCoder.Decode(buf[:h.MessageLength], &m); derr == nil {
				p.note(coapMsg{Code: m.Code, Token: string(m.Token), Payload: bytes.Clone(m.Payload)})
			}
			buf = buf[h.MessageLength:]
		}
		if err != nil {
			p.mu.Lock()
			p.closed, p.readErr = true, err
			p.mu.Unlock()
			return
		}
	}
}

func (p *peer) note(m coapMsg) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch m.Code {
	case codes.CSM:
		p.csm = true
	case codes.Pong:
		p.nPongs++
	default:
		if _, dup := p.got[m.Token]; dup {
			m.Code = 0xff // answered twice: never a valid answer code
		}
		p.got[m.Token] = m
		p.nAnswers++
	}
}

// stopReading stops reading from the socket after the current read.
func (p *peer) stopReading() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = make(chan struct{})
}

func (p *peer) resumeReading() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.paused:
	default:
		close(p.paused)
	}
}

func (p *peer) send(b []byte) {
	_ = p.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = p.conn.Write(b) // the gateway may close first; callers assert on what comes back
}

func (p *peer) answers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nAnswers
}

func (p *peer) pongs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nPongs
}

// request sends one request frame and waits for its answer.
func (p *peer) request(frame []byte) coapMsg {
	var h coder.MessageHeader
	if _, err := coder.DefaultCoder.DecodeHeader(frame, &h); err != nil {
		panic(err)
	}
	tok := string(h.Token)
	p.send(frame)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		m, ok := p.got[tok]
		closed := p.closed
		p.mu.Unlock()
		if ok {
			return m
		}
		if closed {
			return coapMsg{Code: 0xfe, Payload: []byte("connection closed")}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return coapMsg{Code: 0xfd, Payload: []byte("no answer within 10 s")}
}

// waitCSM reports whether the gateway's CSM arrived (the connection was admitted).
func (p *peer) waitCSM(within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		csm, closed := p.csm, p.closed
		p.mu.Unlock()
		if csm || closed {
			return csm
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func (p *peer) expectClosed(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("connection from %s still open after %v", p.conn.LocalAddr(), within)
	}
}

func (p *peer) expectNoAnswers(t *testing.T) {
	t.Helper()
	if n := p.answers(); n != 0 {
		t.Errorf("%d answers on a connection that sent no valid request", n)
	}
}

// waitClosedOrPong reports true when a pong came, false when the
// connection was closed.
func (p *peer) waitClosedOrPong(t *testing.T, within time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if p.pongs() > 0 {
			return true
		}
		select {
		case <-p.done:
			return p.pongs() > 0
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("neither a pong nor a close within %v", within)
	return false
}

// floodToken is the token of request i of a flood.
func floodToken(i int) []byte {
	tok := make([]byte, 8)
	binary.BigEndian.PutUint64(tok, 0xf100d<<32|uint64(i))
	return tok
}

// flood writes n requests with distinct tokens as fast as the socket takes them.
func (p *peer) flood(n int, frame func(tok []byte) []byte) {
	var buf []byte
	for i := range n {
		buf = append(buf, frame(floodToken(i))...)
		if len(buf) > 32<<10 || i == n-1 {
			p.send(buf)
			buf = buf[:0]
		}
	}
}

// expectEveryTokenAnswered waits for n flood answers and checks each was
// answered once, with one of the codes.
func (p *peer) expectEveryTokenAnswered(t *testing.T, n int, want ...codes.Code) {
	t.Helper()
	// Every flood token, not a count: the gateway's own messages to the
	// peer (its CSM, observations of what the peer published) count as
	// answers too.
	waitFor(t, fmt.Sprintf("%d answers", n), 60*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			return true
		}
		for i := range n {
			if _, ok := p.got[string(floodToken(i))]; !ok {
				return false
			}
		}
		return true
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	byCode := map[codes.Code]int{}
	for i := range n {
		m, ok := p.got[string(floodToken(i))]
		if !ok {
			t.Fatalf("request %d of the flood not answered (%d answers, closed %v: %v)", i, p.nAnswers, p.closed, p.readErr)
		}
		byCode[m.Code]++
		if !slices.Contains(want, m.Code) {
			t.Fatalf("request %d of the flood: %v %q, want one of %v", i, m.Code, m.Payload, want)
		}
	}
	t.Logf("flood of %d: answers by code %v", n, byCode)
}

// onboard signs up with a fresh code, signs in and publishes links (a light
// when nil), all over raw frames.
func (p *peer) onboard(t *testing.T, c *testCloud, di string, links []ocf.Link) {
	t.Helper()
	post := func(path string, body, out any) {
		t.Helper()
		data, err := ocf.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		m := p.request(coapFrame(codes.POST, newToken(), requestOptions(path, message.Option{ID: message.ContentFormat, Value: ocf.Uint16Bytes(uint16(ocf.ContentFormatCBOR))}), data))
		if m.Code != codes.Changed {
			t.Fatalf("POST %s: %v %q", path, m.Code, m.Payload)
		}
		if out != nil {
			if err := ocf.Unmarshal(m.Payload, out); err != nil {
				t.Fatal(err)
			}
		}
	}
	var up ocf.SignUpResponse
	post(ocf.PathAccount, ocf.SignUpRequest{DeviceID: di, AuthProvider: "ocfcloud", AccessToken: c.code().AT}, &up)
	post(ocf.PathSession, ocf.SessionRequest{DeviceID: di, UserID: up.UserID, AccessToken: up.AccessToken, Login: true}, nil)
	if links == nil {
		links = []ocf.Link{{Href: "/light/1", RT: []string{"core.light"}}}
	}
	post(ocf.PathRD, ocf.PublishRequest{DeviceID: di, Links: links}, nil)
}

// sized is a sign-up with a garbage body whose frame is exactly size bytes.
func (p *peer) sized(size int) []byte {
	tok := newToken()
	body := size - len(garbageSignUp(tok, 0))
	for range 4 { // the length field grows with the length
		f := garbageSignUp(tok, body)
		if len(f) == size {
			return f
		}
		body -= len(f) - size
	}
	panic(fmt.Sprintf("cannot make a frame of %d bytes", size))
}

func garbageSignUp(tok []byte, bodyLen int) []byte {
	return coapFrame(codes.POST, tok, requestOptions(ocf.PathAccount), bytes.Repeat([]byte{0x01}, bodyLen))
}

var tokenSeq atomic.Uint64

func newToken() []byte {
	return binary.BigEndian.AppendUint64(nil, tokenSeq.Add(1))
}

// requestOptions are the options of a device request to path, as real OCF
// devices send them, plus extra, in option order.
func requestOptions(path string, extra ...message.Option) message.Options {
	opts := message.Options{}
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		opts = append(opts, message.Option{ID: message.URIPath, Value: []byte(seg)})
	}
	opts = append(opts, ocfOpts()...)
	opts = append(opts, extra...)
	slices.SortStableFunc(opts, func(a, b message.Option) int { return int(a.ID) - int(b.ID) })
	return opts
}

func coapFrame(code codes.Code, token []byte, opts message.Options, payload []byte) []byte {
	m := message.Message{Code: code, Token: token, Options: opts, Payload: payload}
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		panic(err)
	}
	buf := make([]byte, size)
	n, err := coder.DefaultCoder.Encode(m, buf)
	if err != nil {
		panic(err)
	}
	return buf[:n]
}

func heapAfterGC() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// watchGoroutines samples the goroutine count until the returned function
// is called, which reports the highest count seen.
func watchGoroutines() func() int {
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if n := int64(runtime.NumGoroutine()); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return func() int {
		close(stop)
		<-done
		return int(peak.Load())
	}
}
