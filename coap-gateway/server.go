package coapgateway

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/monitor/inactivity"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/connections"
	"github.com/plgd-dev/go-coap/v3/tcp"
	"github.com/plgd-dev/go-coap/v3/tcp/client"
)

// connServer accepts device connections and runs go-coap client.Conns over
// them. It replaces go-coap's tcp server, which builds every connection from
// client.DefaultConfig and so ignores WithLimitClientParallelRequest: its
// connections allow one request from the cloud in flight at a time, and one
// slow device answer would hold every other command and observation behind
// it. Building the connection here applies the gateway's options to the
// connection itself.
type connServer struct {
	g      *Gateway
	ln     *limitListener
	cfg    client.Config
	ctx    context.Context
	cancel context.CancelFunc
	conns  *connections.Connections
	wg     sync.WaitGroup
}

func (g *Gateway) newConnServer(ln *limitListener, router *mux.Router) *connServer {
	ctx, cancel := context.WithCancel(context.Background())
	cfg := client.DefaultConfig
	for _, o := range []tcp.Option{
		options.WithMux(router),
		options.WithContext(ctx),
		options.WithErrors(func(err error) {
			if !coapnet.IsCancelOrCloseError(err) {
				g.log.Debug("coap", "err", err)
			}
		}),
		// Devices send no CSM (iotivity-lite does not wait for one either).
		options.WithDisablePeerTCPSignalMessageCSMs(),
		options.WithMaxMessageSize(g.cfg.MaxMessageSize),
		// Commands and observations to one device run in parallel.
		options.WithLimitClientParallelRequest(0),
		options.WithLimitClientEndpointParallelRequest(0),
		// Memory per idle connection (TOOLING.md): a small read buffer, no
		// blockwise state (OCF over TCP sends whole messages), and a
		// one-slot queue of received messages.
		options.WithConnectionCacheSize(256),
		options.WithBlockwise(false, 0, 0),
		options.WithReceivedMessageQueueSize(1),
		options.WithCloseSocket(),
	} {
		o.TCPClientApply(&cfg)
	}
	cfg.GetToken = message.GetToken
	return &connServer{g: g, ln: ln, cfg: cfg, ctx: ctx, cancel: cancel, conns: connections.New()}
}

// serve accepts until stop; it closes every connection before returning.
func (s *connServer) serve() {
	// One ticker per listener checks inactivity of all its connections,
	// instead of go-coap's goroutine per connection.
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-s.ctx.Done():
				return
			case now := <-t.C:
				s.conns.CheckExpirations(now)
			}
		}
	}()
	defer func() {
		s.conns.Close()
		s.wg.Wait()
	}()
	for {
		rw, err := s.ln.AcceptWithContext(s.ctx)
		if err != nil {
			if errors.Is(err, coapnet.ErrListenerIsClosed) || s.ctx.Err() != nil {
				return
			}
			s.g.log.Warn("accept device connection", "err", err)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(rw)
		}()
	}
}

func (s *connServer) serveConn(rw net.Conn) {
	cc := s.newConn(rw)
	s.conns.Store(cc)
	defer s.conns.Delete(cc)
	if err := cc.Run(); err != nil && !coapnet.IsCancelOrCloseError(err) {
		s.g.log.Debug("device connection ended", "remote", rw.RemoteAddr().String(), "err", err)
	}
	// Run returns when the peer hangs up; make sure close hooks ran.
	_ = cc.Close()
}

// newConn builds the connection outside serveConn, whose frame stays on the
// connection's goroutine for the connection's whole life: a copy of the
// config there (about 400 bytes) kept every idle connection's stack at 8 KB
// instead of 4 KB.
//
//go:noinline
func (s *connServer) newConn(rw net.Conn) *client.Conn {
	cfg := s.cfg
	monitor := inactivity.New(s.g.cfg.InactivityTimeout, func(cc *client.Conn) {
		s.g.log.Info("closing inactive device connection", "remote", cc.RemoteAddr().String())
		_ = cc.Close()
	})
	// Armed before NewConnWithOpts: over TLS its CSM write runs the
	// handshake, which waits for the peer with no other deadline.
	s.g.adm.awaitSignIn(rw)
	cc := client.NewConnWithOpts(coapnet.NewConn(rw), &cfg, client.WithInactivityMonitor(monitor),
		client.WithRequestMonitor(rejectRepeatedCriticalOptions))
	s.g.onNewConn(cc)
	return cc
}

func (s *connServer) stop() {
	s.cancel()
	_ = s.ln.Close()
}
