package coapgateway

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
)

// connServer accepts device connections on one listener and runs a
// deviceConn on each.
type connServer struct {
	g              *Gateway
	ln             *limitListener
	routes         map[string]handlerFunc
	notFound       handlerFunc
	pool           *pool.Pool
	maxMessageSize uint32
	// maxBeforeSignIn bounds messages of connections not signed in.
	maxBeforeSignIn uint32
	ctx             context.Context
	cancel          context.CancelFunc
	wg              sync.WaitGroup
}

func (g *Gateway) newConnServer(ln *limitListener, routes map[string]handlerFunc, notFound handlerFunc) *connServer {
	ctx, cancel := context.WithCancel(context.Background())
	return &connServer{
		g: g, ln: ln, routes: routes, notFound: notFound,
		// Messages in flight are recycled; a message that grew beyond 2 KiB
		// for a large frame is left to the collector.
		pool:            pool.New(1024, 2048),
		maxMessageSize:  g.cfg.MaxMessageSize,
		maxBeforeSignIn: g.cfg.MaxMessageSizeBeforeSignIn,
		ctx:             ctx, cancel: cancel,
	}
}

// route is the handler for a request's path.
func (s *connServer) route(m *pool.Message) handlerFunc {
	path, err := m.Path()
	if err != nil {
		return s.notFound
	}
	if h, ok := s.routes[path]; ok {
		return h
	}
	return s.notFound
}

// serve accepts until stop; it closes every connection of its listener
// before returning (a connection registered after this sweep closes itself:
// see serveConn).
func (s *connServer) serve() {
	defer func() {
		s.g.mu.Lock()
		for c := range s.g.sessions {
			if c.srv == s {
				_ = c.Close()
			}
		}
		s.g.mu.Unlock()
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
		go s.serveConn(rw)
	}
}

func (s *connServer) serveConn(rw net.Conn) {
	defer s.wg.Done()
	c := s.newConn(rw)
	err := s.ctx.Err() // the listener stopped while this connection was set up
	if err == nil {
		err = c.handshake()
	}
	if err == nil {
		err = c.sendCSM()
	}
	if err == nil {
		err = c.run()
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !coapnet.IsCancelOrCloseError(err) {
		s.g.log.Debug("device connection ended", "remote", rw.RemoteAddr().String(), "err", err)
	}
	_ = c.Close()
	s.g.onConnClosed(c)
}

// newConn builds the connection outside serveConn, whose frame stays on the
// connection's goroutine for the connection's whole life.
//
//go:noinline
func (s *connServer) newConn(rw net.Conn) *deviceConn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &deviceConn{nc: rw, srv: s, ctx: ctx, cancel: cancel}
	c.lastRead.Store(time.Now().UnixNano())
	// Armed before the handshake, which waits for the peer with no other
	// deadline.
	s.g.adm.awaitSignIn(rw)
	s.g.onNewConn(c)
	return c
}

func (s *connServer) stop() {
	s.cancel()
	_ = s.ln.Close()
}
