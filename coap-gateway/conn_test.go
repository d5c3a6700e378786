package coapgateway

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/tcp/coder"
)

// readerTestServer is a connServer whose every request is answered by the
// not-found route (4.01 before sign-in): enough to drive the reader, the
// dispatch and the option checks without a cloud behind them.
func readerTestServer(maxMessage uint32) *connServer {
	g := &Gateway{
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		sessions: map[*deviceConn]*session{},
		workers:  newWorkerPool(time.Second),
	}
	g.cfg.MaxMessageSize = maxMessage
	g.cfg.Limits.setDefaults()
	g.cfg.DeviceTimeout = time.Second
	g.adm = newAdmission(g.cfg.Limits)
	return g.newConnServer(nil, map[string]handlerFunc{}, g.handleNotFound)
}

func frame(t testing.TB, code codes.Code, token string, opts message.Options, payload []byte) []byte {
	m := message.Message{Code: code, Token: message.Token(token), Options: opts, Payload: payload}
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, size)
	if _, err := coder.DefaultCoder.Encode(m, buf); err != nil {
		t.Fatal(err)
	}
	return buf
}

// feed runs a connection over a pipe, writes data in chunks of chunk
// bytes, waits until the gateway has written want bytes or more (0: no
// wait), hangs up, and returns what the gateway wrote. It fails when the
// reader does not end after the peer hung up.
func feed(t testing.TB, srv *connServer, data []byte, chunk, want int) []byte {
	gw, peer := net.Pipe()
	var mu sync.Mutex
	var got []byte
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 512)
		for {
			n, err := peer.Read(buf)
			mu.Lock()
			got = append(got, buf[:n]...)
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	done := make(chan struct{})
	srv.wg.Add(1)
	go func() { srv.serveConn(gw); close(done) }()
	for len(data) > 0 {
		n := min(chunk, len(data))
		if _, err := peer.Write(data[:n]); err != nil {
			break // the gateway closed: a frame it refuses
		}
		data = data[n:]
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= want {
			break
		}
	}
	_ = peer.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader did not end after the peer hung up")
	}
	<-readDone
	return got
}

// decodeAll splits the gateway's output into messages.
func decodeAll(t testing.TB, b []byte) []message.Message {
	var out []message.Message
	for len(b) > 0 {
		m := message.Message{Options: make(message.Options, 0, 8)}
		var h coder.MessageHeader
		if _, err := coder.DefaultCoder.DecodeHeader(b, &h); err != nil || int(h.MessageLength) > len(b) {
			t.Fatalf("the gateway wrote a broken frame: % x", b)
		}
		if _, err := coder.DefaultCoder.Decode(b[:h.MessageLength], &m); err != nil {
			t.Fatalf("the gateway wrote an undecodable frame: %v", err)
		}
		out = append(out, m)
		b = b[h.MessageLength:]
	}
	return out
}

func resPath() message.Options {
	return message.Options{{ID: message.URIPath, Value: []byte("oic")}, {ID: message.URIPath, Value: []byte("res")}}
}

// The reader frames messages however the bytes arrive: one byte at a time,
// several frames in one read, a frame larger than the idle buffer.
func TestReaderFramesMessagesAcrossReads(t *testing.T) {
	var in []byte
	in = append(in, frame(t, codes.CSM, "", nil, nil)...)
	in = append(in, frame(t, codes.Ping, "p1", nil, nil)...)
	in = append(in, frame(t, codes.GET, "g1", resPath(), nil)...)
	in = append(in, frame(t, codes.POST, "g2", resPath(), make([]byte, 3*readChunk))...)
	in = append(in, frame(t, codes.Content, "stray", nil, []byte("x"))...) // an answer nobody waits for
	in = append(in, frame(t, codes.Ping, "p2", nil, nil)...)
	// What the gateway writes: its CSM, two pongs, two 4.01 with the same
	// diagnostic.
	srv := readerTestServer(4096)
	want := len(frame(t, codes.CSM, "", message.Options{{ID: message.TCPMaxMessageSize, Value: []byte{0x10, 0x00}}}, nil)) +
		2*len(frame(t, codes.Pong, "p1", nil, nil)) +
		2*len(frame(t, codes.Unauthorized, "g1", message.Options{{ID: message.ContentFormat, Value: nil}}, []byte("sign in first")))
	for _, chunk := range []int{1, 7, len(in)} {
		got := decodeAll(t, feed(t, srv, in, chunk, want))
		byToken := map[string]codes.Code{}
		for i, m := range got {
			if i == 0 && m.Code != codes.CSM {
				t.Fatalf("chunk %d: first message %v, want the gateway's CSM", chunk, m.Code)
			}
			byToken[string(m.Token)] = m.Code
		}
		want := map[string]codes.Code{"": codes.CSM, "p1": codes.Pong, "g1": codes.Unauthorized, "g2": codes.Unauthorized, "p2": codes.Pong}
		for tok, code := range want {
			if byToken[tok] != code {
				t.Errorf("chunk %d: token %q answered %v, want %v (all: %v)", chunk, tok, byToken[tok], code, byToken)
			}
		}
		if _, ok := byToken["stray"]; ok || len(byToken) != len(want) {
			t.Errorf("chunk %d: unexpected answers %v", chunk, byToken)
		}
	}
}

// A frame over the maximum ends the connection at its header, with the
// frames before it answered.
func TestReaderClosesAtAnOversizedHeader(t *testing.T) {
	in := frame(t, codes.Ping, "p1", nil, nil)
	in = append(in, frame(t, codes.POST, "big", resPath(), make([]byte, 600))...)
	in = append(in, frame(t, codes.Ping, "p2", nil, nil)...)
	got := decodeAll(t, feed(t, readerTestServer(512), in, len(in), 0))
	if len(got) != 2 || got[1].Code != codes.Pong || string(got[1].Token) != "p1" {
		t.Fatalf("got %v, want the CSM and the first pong only", got)
	}
}

// FuzzReader: no input makes the reader panic, hang after the peer hangs
// up, or write a frame that does not decode.
func FuzzReader(f *testing.F) {
	f.Add(frame(f, codes.GET, "g1", resPath(), nil), 3)
	f.Add(frame(f, codes.Ping, "p", nil, nil), 1)
	f.Add(frame(f, codes.POST, "t", append(resPath(), message.Option{ID: 65001, Value: []byte{1}}), []byte{0xa0}), 64)
	f.Add([]byte{0xf1, 0x3f, 0xff, 0xff, 0xff, byte(codes.POST), 0x01}, 2)
	f.Add([]byte{0xd1}, 1)
	f.Add(frame(f, codes.Content, "x", message.Options{{ID: message.Observe, Value: []byte{1}}}, []byte("n")), 5)
	f.Fuzz(func(t *testing.T, data []byte, chunk int) {
		if chunk <= 0 {
			chunk = 1
		}
		decodeAll(t, feed(t, readerTestServer(1024), data, chunk, 0))
	})
}

// A resource is observed once however often observation is asked for; the
// first answer and the notifications after it reach the observer in order.
func TestObservingAnHrefTwiceSendsOneRequest(t *testing.T) {
	srv := readerTestServer(4096)
	gw, peer := net.Pipe()
	defer peer.Close()
	srv.wg.Add(1)
	go srv.serveConn(gw)
	var c *deviceConn
	for c == nil {
		srv.g.mu.Lock()
		for k := range srv.g.sessions {
			c = k
		}
		srv.g.mu.Unlock()
	}
	frames := make(chan message.Message, 8)
	go func() {
		buf := make([]byte, 0, 1024)
		tmp := make([]byte, 512)
		for {
			n, err := peer.Read(tmp)
			if err != nil {
				close(frames)
				return
			}
			buf = append(buf, tmp[:n]...)
			for {
				var h coder.MessageHeader
				if _, err := coder.DefaultCoder.DecodeHeader(buf, &h); err != nil || int(h.MessageLength) > len(buf) {
					break
				}
				m := message.Message{Options: make(message.Options, 0, 8)}
				if _, err := coder.DefaultCoder.Decode(buf[:h.MessageLength], &m); err == nil && m.Code == codes.GET {
					m.Token = append(message.Token(nil), m.Token...)
					frames <- m
				}
				buf = buf[h.MessageLength:]
			}
		}
	}()
	var mu sync.Mutex
	var seen []string
	notify := func(m *pool.Message) {
		b, _ := m.ReadBody()
		mu.Lock()
		seen = append(seen, string(b))
		mu.Unlock()
	}
	first := make(chan bool, 1)
	go func() {
		ok, err := c.observe(context.Background(), "/light/1", notify)
		first <- ok && err == nil
	}()
	var req message.Message
	select {
	case req = <-frames:
	case <-time.After(5 * time.Second):
		t.Fatal("no observe request")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if ok, err := c.observe(ctx, "/light/1", notify); !ok || err != nil {
		t.Fatalf("second observe: %v %v", ok, err)
	}
	select {
	case m := <-frames:
		t.Fatalf("a second request for an observed href: %v", m)
	case <-time.After(100 * time.Millisecond):
	}
	obs := message.Options{{ID: message.Observe, Value: []byte{1}}}
	answer := append(frame(t, codes.Content, string(req.Token), obs, []byte("v1")), frame(t, codes.Content, string(req.Token), obs, []byte("v2"))...)
	if _, err := peer.Write(answer); err != nil {
		t.Fatal(err)
	}
	if !<-first {
		t.Fatal("first observe did not report an observation")
	}
	waitUntil := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := append([]string(nil), seen...)
		mu.Unlock()
		if len(got) == 2 {
			if got[0] != "v1" || got[1] != "v2" {
				t.Fatalf("notifications %q, want v1 then v2", got)
			}
			break
		}
		if time.Now().After(waitUntil) {
			t.Fatalf("notifications %q", got)
		}
		time.Sleep(time.Millisecond)
	}
}
