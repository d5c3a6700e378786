package coapgateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapclient "github.com/plgd-dev/go-coap/v3/net/client"
	"github.com/plgd-dev/go-coap/v3/tcp/coder"
)

// deviceConn is one device's CoAP-over-TCP connection (RFC 8323), built on
// go-coap's message codec and message type but not on its connection: a
// go-coap connection runs two goroutines (a reader and a handler queue) and
// keeps maps for tokens, observations and block-wise transfers even when
// idle. Here one goroutine reads and dispatches; an idle device costs that
// goroutine's stack, the socket and a small read buffer.
//
// The reader never waits for a backend or for the device: requests from the
// device run as serial jobs of the session (see session.handle), answers to
// the cloud's requests go to their waiter, notifications to their observer.
type deviceConn struct {
	nc     net.Conn
	srv    *connServer
	ctx    context.Context // ends when the connection is closed
	cancel context.CancelFunc
	s      *session

	// lastRead is when the last whole message arrived (unix nanoseconds);
	// the listener's sweep closes connections silent beyond the
	// inactivity limit.
	lastRead atomic.Int64
	// signedIn says whether the connection's session is signed in. The
	// session changes it under its lock; it is atomic so that the reader,
	// which must not take that lock, can pick the message size limit.
	signedIn atomic.Bool

	wmu sync.Mutex // one writer at a time

	mu sync.Mutex
	// waiters are the cloud's requests waiting for their answer, by token;
	// nil while there are none.
	waiters map[uint64]chan *pool.Message
	// observers are the device's resources under observation: few per
	// device, so a slice.
	observers []observer
}

// observer routes the notifications that carry token to fn.
type observer struct {
	href  string
	token message.Token
	fn    func(*pool.Message)
}

var (
	errConnClosed     = errors.New("device connection closed")
	errPeerReleased   = errors.New("device sent Release or Abort")
	errMessageTooLong = errors.New("message larger than the maximum message size")
)

// readChunk is the read buffer of an idle connection; a larger frame grows
// it for as long as the frame needs.
const readChunk = 256

// run reads messages until the connection ends, and answers why.
func (c *deviceConn) run() error {
	buf := make([]byte, readChunk)
	start, end := 0, 0
	for {
		// Dispatch every whole frame in buf[start:end].
		for start < end {
			var h coder.MessageHeader
			_, err := coder.DefaultCoder.DecodeHeader(buf[start:end], &h)
			if errors.Is(err, message.ErrShortRead) {
				break
			}
			if err != nil {
				return fmt.Errorf("malformed frame header: %w", err)
			}
			if limit := c.maxMessageSize(); h.MessageLength > limit {
				return fmt.Errorf("%w (%d > %d bytes)", errMessageTooLong, h.MessageLength, limit)
			}
			n := int(h.MessageLength)
			if end-start < n {
				// Make room for the whole frame, no more: a peer that
				// announces a large frame and stalls holds at most it.
				if len(buf)-start < n {
					nb := buf
					if len(buf) < n {
						nb = make([]byte, n)
					}
					copy(nb, buf[start:end])
					buf, start, end = nb, 0, end-start
				}
				break
			}
			if err := c.dispatch(buf[start : start+n]); err != nil {
				return err
			}
			start += n
		}
		if start == end {
			start, end = 0, 0
			if len(buf) > readChunk {
				buf = make([]byte, readChunk) // the large frame is done
			}
		} else if end == len(buf) {
			end = copy(buf, buf[start:end])
			start = 0
		}
		n, err := c.nc.Read(buf[end:])
		end += n
		if err != nil {
			if n > 0 {
				continue // process what came with the error first
			}
			return err
		}
	}
}

// maxMessageSize is the largest message the connection accepts now. A
// device that sends a large message right after its sign-in request,
// without waiting for the answer, can see it refused; devices wait.
func (c *deviceConn) maxMessageSize() uint32 {
	if c.signedIn.Load() {
		return c.srv.maxMessageSize
	}
	return c.srv.maxBeforeSignIn
}

// dispatch decodes one frame and routes it.
func (c *deviceConn) dispatch(frame []byte) error {
	m := c.srv.pool.AcquireMessage(c.ctx)
	if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, frame); err != nil {
		// The frame's own fields cannot be trusted and TCP has no Reset:
		// the connection ends without an answer (RFC 8323 §3.2).
		c.srv.pool.ReleaseMessage(m)
		return fmt.Errorf("malformed message: %w", err)
	}
	c.lastRead.Store(time.Now().UnixNano())
	code := m.Code()
	switch {
	case code == codes.Empty: // allowed, and means nothing (RFC 8323 §3.3)
		c.srv.pool.ReleaseMessage(m)
	case code >= codes.CSM:
		defer c.srv.pool.ReleaseMessage(m)
		return c.signal(m)
	case code < 32:
		c.request(m)
	default:
		c.answer(m)
	}
	return nil
}

// signal handles the RFC 8323 §5 signalling messages.
func (c *deviceConn) signal(m *pool.Message) error {
	switch m.Code() {
	case codes.Ping:
		// The pong waits until what the device sent before the ping is
		// stored (MaxPongDelay at most): a pong then tells the device
		// that its earlier notifications are durable.
		pong := c.srv.pool.AcquireMessage(c.ctx)
		defer c.srv.pool.ReleaseMessage(pong)
		pong.SetCode(codes.Pong)
		pong.SetToken(m.Token())
		data, err := pong.MarshalWithEncoder(coder.DefaultCoder)
		if err != nil {
			return err
		}
		frame := append([]byte(nil), data...)
		c.s.afterStored(func() {
			if err := c.writeFrame(frame); err != nil {
				c.srv.g.log.Debug("write pong", "remote", c.RemoteAddr().String(), "err", err)
			}
		}, c.srv.g.cfg.MaxPongDelay)
		return nil
	case codes.Release, codes.Abort:
		return errPeerReleased
	}
	return nil // CSM (devices send none, or defaults), Pong
}

// request hands a device's request to its route, after the option checks
// RFC 7252 prescribes: unknown critical options (§5.4.1), option values of
// a length outside their range (§5.4.3) and repeated non-repeatable critical
// options (§5.4.5) get 4.02 Bad Option.
func (c *deviceConn) request(m *pool.Message) {
	diagnostic := ""
	if unknown := coapclient.GetUnknownCriticalOptions(m.Options()); len(unknown) > 0 {
		diagnostic = coapclient.FormatUnknownCriticalOptionsDiagnostic(unknown)
	} else if id, ok := repeatedCriticalOption(m.Options()); ok {
		diagnostic = fmt.Sprintf("option %d repeated", id)
	}
	if diagnostic != "" {
		c.answerNow(m, codes.BadOption, diagnostic)
		return
	}
	c.s.handle(c.srv.route(m), m)
}

// answerNow answers request m with code and a diagnostic payload from the
// reader itself, and releases m.
func (c *deviceConn) answerNow(m *pool.Message, code codes.Code, diagnostic string) {
	defer c.srv.pool.ReleaseMessage(m)
	resp := c.srv.pool.AcquireMessage(c.ctx)
	defer c.srv.pool.ReleaseMessage(resp)
	resp.SetCode(code)
	resp.SetToken(m.Token())
	resp.SetContentFormat(message.TextPlain)
	resp.SetBody(bytes.NewReader([]byte(diagnostic)))
	if err := c.write(resp); err != nil {
		c.srv.g.log.Debug("write answer", "remote", c.RemoteAddr().String(), "err", err)
	}
}

// answer routes a device's answer to the request that waits for it and a
// notification to its observer (the first answer of an observation goes to
// both, so the observer sees every representation in the order the device
// sent them). An answer nobody waits for (its request timed out) is dropped.
func (c *deviceConn) answer(m *pool.Message) {
	key := m.Token().Hash()
	c.mu.Lock()
	ch, waited := c.waiters[key]
	if waited {
		c.forgetLocked(key)
	}
	var notify func(*pool.Message)
	if i := c.observerIndexLocked(m.Token()); i >= 0 {
		notify = c.observers[i].fn
		if m.Code() >= codes.BadRequest {
			// An error ends the observation on the device (RFC 7641 §3.2).
			c.observers = slices.Delete(c.observers, i, i+1)
		}
	}
	c.mu.Unlock()
	if notify != nil {
		notify(m)
	}
	if waited {
		ch <- m // buffered; the waiter releases m
		return
	}
	c.srv.pool.ReleaseMessage(m)
}

func (c *deviceConn) observerIndexLocked(token message.Token) int {
	return slices.IndexFunc(c.observers, func(o observer) bool { return bytes.Equal(o.token, token) })
}

// write sends m; WriteTimeout is enforced by the connection underneath
// (countedConn).
func (c *deviceConn) write(m *pool.Message) error {
	data, err := m.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		return fmt.Errorf("encode %v: %w", m.Code(), err)
	}
	return c.writeFrame(data)
}

// writeFrame sends an encoded message.
func (c *deviceConn) writeFrame(data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ctx.Err() != nil {
		return errConnClosed
	}
	_, err := c.nc.Write(data)
	return err
}

// newRequest is a request from the cloud to the device at href, with a new
// token and the options OCF devices expect; the caller releases it.
func (c *deviceConn) newRequest(ctx context.Context, code codes.Code, href string) (*pool.Message, error) {
	token, err := message.GetToken()
	if err != nil {
		return nil, err
	}
	m := c.srv.pool.AcquireMessage(ctx)
	m.SetCode(code)
	m.SetToken(token)
	if err := m.SetPath(href); err != nil {
		c.srv.pool.ReleaseMessage(m)
		return nil, err
	}
	for _, o := range ocfOptions() {
		m.AddOptionBytes(o.ID, o.Value)
	}
	return m, nil
}

// do sends request req and waits for the device's answer until ctx ends
// or the connection closes. The caller releases req and the answer.
func (c *deviceConn) do(ctx context.Context, req *pool.Message) (*pool.Message, error) {
	key := req.Token().Hash()
	if c.ctx.Err() != nil {
		return nil, errConnClosed
	}
	ch := make(chan *pool.Message, 1)
	c.mu.Lock()
	if c.waiters == nil {
		c.waiters = map[uint64]chan *pool.Message{}
	}
	c.waiters[key] = ch
	c.mu.Unlock()
	if err := c.write(req); err != nil {
		c.forget(key)
		return nil, err
	}
	select {
	case resp := <-ch:
		return resp, nil
	case <-ctx.Done():
		c.forget(key)
		return nil, ctx.Err()
	case <-c.ctx.Done():
		c.forget(key)
		return nil, errConnClosed
	}
}

func (c *deviceConn) forget(key uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetLocked(key)
}

// forgetLocked removes the waiter of key; c.mu is held. An idle connection
// keeps no map.
func (c *deviceConn) forgetLocked(key uint64) {
	delete(c.waiters, key)
	if len(c.waiters) == 0 {
		c.waiters = nil
	}
}

// observe asks the device to observe href (RFC 7641). Its first answer,
// and when the device accepted the observation (the answer carries an
// Observe option) every later notification until stopObserving, go to
// notify on the reader. A device that does not observe href answers a plain
// read, and nothing stays registered.
func (c *deviceConn) observe(ctx context.Context, href string, notify func(*pool.Message)) (observing bool, err error) {
	req, err := c.newRequest(ctx, codes.GET, href)
	if err != nil {
		return false, err
	}
	defer c.srv.pool.ReleaseMessage(req)
	req.SetObserve(0)
	token := append(message.Token(nil), req.Token()...)
	c.mu.Lock()
	// One observation per href, checked and registered at once: two
	// publishes of a link in quick succession would otherwise observe it
	// twice and every notification would become two events. An href
	// already observed is not asked for again.
	if slices.ContainsFunc(c.observers, func(o observer) bool { return o.href == href }) {
		c.mu.Unlock()
		return true, nil
	}
	// Registered before the request goes out: a notification can follow
	// the first answer at once, and both arrive on the reader.
	c.observers = append(c.observers, observer{href: href, token: token, fn: notify})
	c.mu.Unlock()
	first, err := c.do(ctx, req)
	if err == nil {
		_, obsErr := first.Observe()
		observing = obsErr == nil && first.Code() == codes.Content
		c.srv.pool.ReleaseMessage(first)
	}
	if !observing {
		c.dropObserver(token)
	}
	return observing, err
}

func (c *deviceConn) dropObserver(token message.Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := c.observerIndexLocked(token); i >= 0 {
		c.observers = slices.Delete(c.observers, i, i+1)
	}
	if len(c.observers) == 0 {
		c.observers = nil
	}
}

// stopObserving ends the observations of hrefs (all when hrefs is nil): no
// further notification is delivered, and the device is told to deregister
// (a GET with Observe 1 and the observation's token) in the background.
func (c *deviceConn) stopObserving(hrefs []string) {
	c.mu.Lock()
	var stopped []observer
	c.observers = slices.DeleteFunc(c.observers, func(o observer) bool {
		if hrefs == nil || slices.Contains(hrefs, o.href) {
			stopped = append(stopped, o)
			return true
		}
		return false
	})
	if len(c.observers) == 0 {
		c.observers = nil
	}
	c.mu.Unlock()
	if c.ctx.Err() != nil || len(stopped) == 0 {
		return
	}
	go func() {
		for _, o := range stopped {
			c.deregister(o)
		}
	}()
}

func (c *deviceConn) deregister(o observer) {
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.g.cfg.DeviceTimeout)
	defer cancel()
	req, err := c.newRequest(ctx, codes.GET, o.href)
	if err != nil {
		return
	}
	defer c.srv.pool.ReleaseMessage(req)
	req.SetToken(o.token)
	req.SetObserve(1)
	if resp, err := c.do(ctx, req); err == nil {
		c.srv.pool.ReleaseMessage(resp)
	}
}

// Close closes the connection; the reader then ends and the session closes.
func (c *deviceConn) Close() error {
	c.cancel()
	return c.nc.Close()
}

// NetConn is the connection underneath (a *tls.Conn on coaps+tcp).
func (c *deviceConn) NetConn() net.Conn { return c.nc }

// RemoteAddr is the device's address.
func (c *deviceConn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// handshake runs the TLS handshake of a coaps+tcp connection; the sign-in
// deadline armed before bounds it.
func (c *deviceConn) handshake() error {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return nil
	}
	return tc.HandshakeContext(c.ctx)
}

// sendCSM sends the Capabilities and Settings Message every CoAP-over-TCP
// peer starts with (RFC 8323 §5.3), with the largest message accepted.
func (c *deviceConn) sendCSM() error {
	m := c.srv.pool.AcquireMessage(c.ctx)
	defer c.srv.pool.ReleaseMessage(m)
	m.SetCode(codes.CSM)
	m.SetOptionUint32(message.TCPMaxMessageSize, c.srv.maxMessageSize)
	return c.write(m)
}
