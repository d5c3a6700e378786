package devicesim

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/tcp"
	"github.com/plgd-dev/go-coap/v3/tcp/client"
	tcpserver "github.com/plgd-dev/go-coap/v3/tcp/server"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

const (
	fakeUID  = "8e8b7a52-4bb8-4b47-9f0b-7c3b1f1f0a01"
	fakeCode = "onboarding-code-1"
)

// recorded is one request the device sent to the fake cloud.
type recorded struct {
	conn   int // 1-based connection number
	at     time.Time
	method codes.Code
	path   string
	raw    []byte
	body   map[string]any
	optErr string // missing or wrong OCF options
}

// fakeCloud is a minimal CoAP gateway for this package's tests: it signs
// devices up and in, accepts publishes, records every request and checks the
// options real devices send. It is not the real gateway.
type fakeCloud struct {
	t    *testing.T
	addr string

	dropSignUps   atomic.Int32 // sign-ups to leave unanswered
	failSignUps   atomic.Int32 // sign-ups to answer 5.03
	rejectSignIns atomic.Int32 // sign-ins to answer 4.01
	signInLife    atomic.Int64 // expiresin of sign-in answers; 0 means 3000

	mu        sync.Mutex
	conns     []*client.Conn
	connIDs   map[mux.Conn]int
	reqs      []recorded
	signals   map[codes.Code]int
	tokenN    int
	access    string
	refresh   string
	published map[int]bool // connection number → publish answered
}

func newFakeCloud(t *testing.T) *fakeCloud {
	t.Helper()
	return newFakeCloudWith(t, nil)
}

// newFakeCloudWith listens with TLS when tlsCfg is set (coaps+tcp).
func newFakeCloudWith(t *testing.T, tlsCfg *tls.Config) *fakeCloud {
	t.Helper()
	f := &fakeCloud{
		t:         t,
		connIDs:   map[mux.Conn]int{},
		signals:   map[codes.Code]int{},
		published: map[int]bool{},
	}
	router := mux.NewRouter()
	router.DefaultHandle(mux.HandlerFunc(f.handle))
	var l interface {
		tcpserver.Listener
		Addr() net.Addr
	}
	var err error
	if tlsCfg != nil {
		l, err = coapnet.NewTLSListener("tcp", "127.0.0.1:0", tlsCfg)
	} else {
		l, err = coapnet.NewTCPListener("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := tcp.NewServer(
		options.WithMux(router),
		options.WithErrors(func(error) {}),
		options.WithLimitClientParallelRequest(0),
		options.WithLimitClientEndpointParallelRequest(0),
		options.WithOnNewConn(func(cc *client.Conn) {
			f.mu.Lock()
			f.conns = append(f.conns, cc)
			f.connIDs[cc] = len(f.conns)
			f.mu.Unlock()
			cc.SetTCPSignalReceivedHandler(func(c codes.Code) {
				f.mu.Lock()
				f.signals[c]++
				f.mu.Unlock()
			})
		}),
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	f.addr = l.Addr().String()
	return f
}

func (f *fakeCloud) cis() string { return "coap+tcp://" + f.addr }

// peerCertificates returns the client certificates of connection n (TLS only).
func (f *fakeCloud) peerCertificates(n int) int {
	if tc, ok := f.conn(n).NetConn().(*tls.Conn); ok {
		return len(tc.ConnectionState().PeerCertificates)
	}
	return -1
}

func (f *fakeCloud) handle(w mux.ResponseWriter, r *mux.Message) {
	path, _ := r.Options().Path()
	raw, _ := r.ReadBody()
	rec := recorded{at: time.Now(), method: r.Code(), path: path, raw: raw, optErr: checkOCFOptions(r, len(raw) > 0)}
	if len(raw) > 0 {
		if err := ocf.Unmarshal(raw, &rec.body); err != nil {
			rec.optErr += " body: " + err.Error()
		}
	}
	f.mu.Lock()
	rec.conn = f.connIDs[w.Conn()]
	f.reqs = append(f.reqs, rec)
	f.mu.Unlock()

	switch path {
	case ocf.PathAccount:
		if f.dropSignUps.Add(-1) >= 0 {
			return // leave the device waiting, as a lost answer would
		}
		if f.failSignUps.Add(-1) >= 0 {
			answer(w, codes.ServiceUnavailable, nil)
			return
		}
		if rec.body["accesstoken"] != fakeCode {
			answer(w, codes.Unauthorized, nil)
			return
		}
		f.mu.Lock()
		if f.access == "" {
			f.issueLocked()
		}
		resp := ocf.SignUpResponse{AccessToken: f.access, RefreshToken: f.refresh, UserID: fakeUID, ExpiresIn: 3600}
		f.mu.Unlock()
		answer(w, codes.Changed, resp)
	case ocf.PathSession:
		f.mu.Lock()
		ok := rec.body["accesstoken"] == f.access && rec.body["uid"] == fakeUID
		f.mu.Unlock()
		if !ok || f.rejectSignIns.Add(-1) >= 0 {
			answer(w, codes.Unauthorized, nil)
			return
		}
		life := f.signInLife.Load()
		if life == 0 {
			life = 3000
		}
		answer(w, codes.Changed, ocf.SessionResponse{ExpiresIn: life})
	case ocf.PathTokenRefresh:
		f.mu.Lock()
		ok := rec.body["refreshtoken"] == f.refresh
		if ok {
			f.issueLocked()
		}
		resp := ocf.TokenRefreshResponse{AccessToken: f.access, RefreshToken: f.refresh, ExpiresIn: 3600}
		f.mu.Unlock()
		if !ok {
			answer(w, codes.Unauthorized, nil)
			return
		}
		answer(w, codes.Changed, resp)
	case ocf.PathRD:
		var req ocf.PublishRequest
		if err := ocf.Unmarshal(raw, &req); err != nil {
			answer(w, codes.BadRequest, nil)
			return
		}
		answer(w, codes.Changed, req)
		f.mu.Lock()
		f.published[rec.conn] = true
		f.mu.Unlock()
	default:
		answer(w, codes.NotFound, nil)
	}
}

func (f *fakeCloud) issueLocked() {
	f.tokenN++
	f.access = fmt.Sprintf("access-%d", f.tokenN)
	f.refresh = fmt.Sprintf("refresh-%d", f.tokenN)
}

func answer(w mux.ResponseWriter, code codes.Code, v any) {
	if v == nil {
		_ = w.SetResponse(code, message.TextPlain, nil)
		return
	}
	b, err := ocf.Marshal(v)
	if err != nil {
		panic(err)
	}
	_ = w.SetResponse(code, ocf.ContentFormatCBOR, bytes.NewReader(b))
}

// checkOCFOptions reports what an iotivity-lite request would carry but r lacks.
func checkOCFOptions(r *mux.Message, hasBody bool) string {
	var problems []string
	want := func(id message.OptionID, name string, v uint32) {
		got, err := r.GetOptionUint32(id)
		if err != nil {
			problems = append(problems, name+" missing")
		} else if got != v {
			problems = append(problems, fmt.Sprintf("%s = %d, want %d", name, got, v))
		}
	}
	want(message.Accept, "Accept", uint32(ocf.ContentFormatCBOR))
	want(ocf.OptionAcceptVersion, "2049", ocf.Version1)
	want(ocf.OptionContentVersion, "2053", ocf.Version1)
	if hasBody {
		want(message.ContentFormat, "Content-Format", uint32(ocf.ContentFormatCBOR))
	}
	return strings.Join(problems, "; ")
}

func (f *fakeCloud) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

func (f *fakeCloud) requestsTo(path string) []recorded {
	var out []recorded
	for _, r := range f.requests() {
		if r.path == path {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeCloud) conn(n int) *client.Conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns[n-1]
}

func (f *fakeCloud) isPublished(n int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.published[n]
}

func (f *fakeCloud) signalCount(c codes.Code) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.signals[c]
}
