package coapgateway

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/ocfcloud/ocfcloud/certs"
	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// session is the state of one device connection.
type session struct {
	g  *Gateway
	cc *deviceConn
	// ctx is the connection's context: it ends when the device hangs up
	// (a session has no context of its own, which saves ~100 bytes per
	// idle device).
	ctx context.Context

	// qmu guards the queue of events to publish in order. A goroutine
	// drains it only while it is not empty, so an idle device costs no
	// goroutine; sessionsWG is done once the session is closed and drained.
	qmu      sync.Mutex
	qcond    *sync.Cond // signalled when the queue shrinks
	queue    []*events.Envelope
	draining bool
	closed   bool
	// enqueued and stored count the events queued and done with (stored,
	// or dropped after retries); afterStored's barriers wait for stored
	// to reach their count.
	enqueued, stored uint64
	barriers         []storedBarrier

	// pubMu is held while the publish loop publishes one event; gone holds
	// devices signed off on this connection, whose queued events must not
	// reach the stream after device_unregistered (the registry would
	// register the device again).
	pubMu sync.Mutex
	gone  map[string]bool

	// jobs are the device's requests waiting to be handled (see handle).
	jmu        sync.Mutex
	jobs       []func()
	jobRunning bool

	// pending counts commands in flight to the device.
	pending atomic.Int32

	// mu guards what follows, and changes to cc.signedIn, the session's
	// signed-in state.
	mu           sync.Mutex
	deviceID     string
	userID       string
	expires      time.Time  // the access token's expiry; zero: none (see sweep)
	links        []ocf.Link // few per device: a slice is smaller than a map
	linksGen     uint64     // counts publishes and unpublishes
	authFailures int
	// signedUp is the device that signed up on this connection: it has
	// published nothing yet, so sign-in need not ask the registry.
	signedUp string
	// issued is the access token authz gave this connection at sign-up,
	// until the sign-in that uses it.
	issued *issuedToken
	cmdSub *nats.Subscription
}

func newSession(g *Gateway, cc *deviceConn) *session {
	s := &session{g: g, cc: cc, ctx: cc.ctx}
	s.qcond = sync.NewCond(&s.qmu)
	return s
}

// callContext bounds one call made for the session (a request to the
// device or to a backend). It is deliberately not derived from s.ctx: a
// child context gives its parent a map of children that stays allocated
// after the call, about 300 bytes on every idle device. Nothing is lost:
// a request to the device fails when its connection closes, and backend
// calls are short.
func (s *session) callContext(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// maxQueued events wait for JetStream per connection; beyond that the
// device's reader blocks (backpressure) until JetStream catches up.
const maxQueued = 256

// drain publishes queued events in the order the device caused them. A
// JetStream outage is retried with backoff until the connection ends.
func (s *session) drain() {
	for {
		s.qmu.Lock()
		if len(s.queue) == 0 {
			s.draining = false
			if s.closed {
				s.g.sessionsWG.Done() // the last event is out
			}
			s.qmu.Unlock()
			return
		}
		e := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		if len(s.queue) == 0 {
			s.queue = nil
		}
		s.qcond.Broadcast()
		s.qmu.Unlock()
		s.publishQueued(e)
		s.markStored()
	}
}

// markStored counts one queued event as done with and runs the barriers
// that waited for it.
func (s *session) markStored() {
	s.qmu.Lock()
	s.stored++
	due := s.dueBarriersLocked()
	s.qmu.Unlock()
	for _, f := range due {
		f()
	}
}

// storedBarrier runs fire once the events queued before it are stored.
type storedBarrier struct {
	at   uint64
	fire func()
}

func (s *session) dueBarriersLocked() []func() {
	var due []func()
	for len(s.barriers) > 0 && s.barriers[0].at <= s.stored {
		due = append(due, s.barriers[0].fire)
		s.barriers = s.barriers[1:]
	}
	if len(s.barriers) == 0 {
		s.barriers = nil
	}
	return due
}

// afterStored runs fire once every event queued so far is stored (or
// dropped), or after maxWait, whichever comes first; at once when nothing
// is pending. The gateway holds a device's pong this way.
func (s *session) afterStored(fire func(), maxWait time.Duration) {
	s.qmu.Lock()
	if s.stored == s.enqueued || maxWait < 0 || s.closed {
		s.qmu.Unlock()
		fire()
		return
	}
	var once sync.Once
	f := func() { once.Do(fire) }
	s.barriers = append(s.barriers, storedBarrier{at: s.enqueued, fire: f})
	s.qmu.Unlock()
	time.AfterFunc(maxWait, f)
}

// queuedPublishAttempt bounds one attempt to store a queued event. An ack
// takes milliseconds; one missing after 3 s is most likely lost (a stream
// that failed to write answers nothing, nor does a JetStream restarted
// after a full disk answer what was sent before), and the retry carries the
// same message id, so JetStream stores the event once however many
// attempts reach it. Waiting the whole BackendTimeout held the device's
// later events back for 10 s after every such loss.
const queuedPublishAttempt = 3 * time.Second

func (s *session) publishQueued(e *events.Envelope) {
	for attempt := 0; ; attempt++ {
		s.pubMu.Lock()
		if s.gone[e.DeviceID] {
			s.pubMu.Unlock()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), min(s.g.cfg.BackendTimeout, queuedPublishAttempt))
		err := s.g.pub.Publish(ctx, e)
		cancel()
		s.pubMu.Unlock()
		if err == nil {
			return
		}
		s.g.log.Warn("publish event", "device_id", e.DeviceID, "type", e.Type, "err", err)
		if attempt >= 5 && s.ctx.Err() != nil {
			s.g.log.Error("dropping event after retries", "device_id", e.DeviceID, "type", e.Type)
			return
		}
		time.Sleep(min(time.Duration(1<<attempt)*100*time.Millisecond, 5*time.Second))
	}
}

// close runs when the connection is gone: the device goes offline.
func (s *session) close() {
	s.mu.Lock()
	wasSignedIn := s.cc.signedIn.Swap(false)
	s.expires = time.Time{}
	di, uid := s.deviceID, s.userID
	s.unsubscribeLocked()
	s.mu.Unlock()
	if wasSignedIn {
		s.enqueue(uid, di, events.DeviceOffline, s.g.offline("disconnected"))
	}
	s.qmu.Lock()
	s.closed = true
	if !s.draining {
		s.g.sessionsWG.Done()
	}
	s.qcond.Broadcast()
	s.qmu.Unlock()
}

func (s *session) enqueue(owner, deviceID string, t events.Type, fill func(*events.Envelope)) {
	e := &events.Envelope{DeviceID: deviceID, Owner: owner, Type: t, Sequence: s.g.seq.Next(), Time: s.g.cfg.Now().UTC()}
	if fill != nil {
		fill(e)
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	for len(s.queue) >= maxQueued && !s.closed {
		s.qcond.Wait() // JetStream lags: backpressure on the device
	}
	if s.closed {
		return
	}
	s.queue = append(s.queue, e)
	s.enqueued++
	if !s.draining {
		s.draining = true
		go s.drain()
	}
}

// publishNow publishes an event and waits for JetStream's ack; used where the
// device's answer depends on the change being durable.
func (s *session) publishNow(ctx context.Context, owner, deviceID string, t events.Type, fill func(*events.Envelope)) error {
	e := &events.Envelope{DeviceID: deviceID, Owner: owner, Type: t, Sequence: s.g.seq.Next(), Time: s.g.cfg.Now().UTC()}
	if fill != nil {
		fill(e)
	}
	return s.g.pub.Publish(ctx, e)
}

func (s *session) identity() (signedIn bool, deviceID, userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cc.signedIn.Load(), s.deviceID, s.userID
}

// authFailed counts a rejected credential and closes the connection after
// too many.
func (s *session) authFailed() {
	s.mu.Lock()
	s.authFailures++
	n := s.authFailures
	s.mu.Unlock()
	if n >= s.g.cfg.MaxAuthFailures {
		s.logger().Warn("closing connection after repeated auth failures")
		go func() {
			time.Sleep(100 * time.Millisecond) // let the 4.01 go out first
			_ = s.cc.Close()
		}()
	}
}

// signIn binds the connection to a device until the token expires.
// It returns the links generation for restoreLinksIf.
func (s *session) signIn(deviceID, userID string, expires time.Time) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deviceID, s.userID, s.authFailures = deviceID, userID, 0
	s.cc.signedIn.Store(true)
	s.expires = expires
	s.g.adm.signedIn(s.cc.NetConn())
	return s.linksGen
}

// expiredLocked reports whether the session is signed in with an access
// token that has expired at now; s.mu is held.
func (s *session) expiredLocked(now time.Time) bool {
	return s.cc.signedIn.Load() && !s.expires.IsZero() && !now.Before(s.expires)
}

// expireIfDue signs the session out when its access token has expired.
func (s *session) expireIfDue(now time.Time) {
	s.mu.Lock()
	due := s.expiredLocked(now)
	s.mu.Unlock()
	if due {
		s.logger().Info("access token expired; device must refresh and sign in again")
		s.signOut()
	}
}

// signOut ends the session but keeps the connection.
func (s *session) signOut() {
	s.mu.Lock()
	if !s.cc.signedIn.Swap(false) {
		s.mu.Unlock()
		return
	}
	s.expires = time.Time{}
	di, uid := s.deviceID, s.userID
	s.unsubscribeLocked()
	s.mu.Unlock()
	s.g.adm.awaitSignIn(s.cc.NetConn()) // the connection must sign in again
	s.cc.stopObserving(nil)
	s.enqueue(uid, di, events.DeviceOffline, s.g.offline("signed_out"))
}

// signedOff ends everything this connection does for deviceID after the
// device was unregistered: no session, no commands, no observations, and no
// further events (not even device_offline).
func (s *session) signedOff(deviceID string) {
	s.mu.Lock()
	if s.deviceID != deviceID {
		s.mu.Unlock()
		return
	}
	s.cc.signedIn.Store(false)
	s.expires = time.Time{}
	s.links = nil
	s.unsubscribeLocked()
	s.mu.Unlock()
	s.cc.stopObserving(nil)
}

// setGone stops (or resumes) publishing queued events of deviceID. Stopping
// waits for an event being published right now, so nothing of the device's
// published afterwards can overtake what the caller publishes next.
func (s *session) setGone(deviceID string, gone bool) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if s.gone == nil {
		s.gone = map[string]bool{}
	}
	if gone {
		s.gone[deviceID] = true
	} else {
		delete(s.gone, deviceID)
	}
}

// observe starts observing (or reads once) every given link not yet observed.
// It runs on its own goroutine: answers from the device are processed by the
// connection's reader, which must never wait for them.
func (s *session) observe(links []ocf.Link) {
	for _, l := range links {
		href := l.Href
		if signedIn, _, _ := s.identity(); !signedIn || s.ctx.Err() != nil {
			continue
		}
		ctx, cancel := s.callContext(s.g.cfg.DeviceTimeout)
		var err error
		if l.Observable() {
			// The first answer, too, reaches onContent on the reader, in
			// order with the notifications that follow it.
			_, err = s.cc.observe(ctx, href, func(n *pool.Message) { s.onContent(href, n) })
		} else {
			var resp *pool.Message
			if resp, err = s.read(ctx, href); err == nil {
				s.onContent(href, resp)
				s.cc.srv.pool.ReleaseMessage(resp)
			}
		}
		cancel()
		if err != nil {
			s.logger().Info("read resource", "href", href, "observe", l.Observable(), "err", err)
		}
	}
}

// read asks the device for href once.
func (s *session) read(ctx context.Context, href string) (*pool.Message, error) {
	req, err := s.cc.newRequest(ctx, codes.GET, href)
	if err != nil {
		return nil, err
	}
	defer s.cc.srv.pool.ReleaseMessage(req)
	return s.cc.do(ctx, req)
}

// onContent turns a device answer or notification into a resource_changed event.
func (s *session) onContent(href string, m *pool.Message) {
	if m.Code() != codes.Content && m.Code() != codes.Changed {
		s.logger().Debug("resource answered", "href", href, "code", m.Code().String())
		return
	}
	body, err := m.ReadBody()
	if err != nil {
		return
	}
	ct := events.ContentTypeOCFCBOR
	if cf, err := m.ContentFormat(); err == nil && cf == message.AppJSON {
		ct = events.ContentTypeJSON
	}
	signedIn, di, uid := s.identity()
	if !signedIn {
		return
	}
	content := append([]byte(nil), body...)
	s.enqueue(uid, di, events.ResourceChanged, func(e *events.Envelope) {
		e.Href, e.Status, e.ContentType, e.Content = href, 200, ct, content
	})
}

func (s *session) setLinks(links []ocf.Link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.linksGen++
	s.mergeLinksLocked(links)
}

// restoreLinksIf merges links loaded at sign-in unless the device published
// or unpublished since generation gen.
func (s *session) restoreLinksIf(gen uint64, links []ocf.Link) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.linksGen != gen {
		return false
	}
	s.mergeLinksLocked(links)
	return true
}

func (s *session) mergeLinksLocked(links []ocf.Link) {
	for _, l := range links {
		i := slices.IndexFunc(s.links, func(o ocf.Link) bool { return o.Href == l.Href })
		if i >= 0 {
			s.links[i] = l
		} else {
			s.links = append(s.links, l)
		}
	}
}

func (s *session) removeLinks(hrefs []string) {
	s.mu.Lock()
	s.linksGen++
	s.links = slices.DeleteFunc(s.links, func(l ocf.Link) bool { return slices.Contains(hrefs, l.Href) })
	s.mu.Unlock()
	s.cc.stopObserving(hrefs)
}

// logger is the session's logger with the connection and device; built on
// use (logging is rare) rather than kept per connection.
func (s *session) logger() *slog.Logger {
	s.mu.Lock()
	di, uid := s.deviceID, s.userID
	s.mu.Unlock()
	l := s.g.log.With("remote", s.cc.RemoteAddr().String())
	if di != "" {
		l = l.With("device_id", di, "user_id", uid)
	}
	return l
}

func publishedContent(links []ocf.Link) []byte {
	data, _ := json.Marshal(events.ResourcesPublishedContent{Links: links})
	return data
}

func unpublishedContent(hrefs []string) []byte {
	data, _ := json.Marshal(events.ResourcesUnpublishedContent{Hrefs: hrefs})
	return data
}

// closeSoon closes the connection after the answer being written has gone
// out; handlers run before their answer is written.
func (s *session) closeSoon() {
	go func() {
		t := time.NewTimer(100 * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
		}
		_ = s.cc.Close()
	}()
}

// checkCertIdentity verifies, on coaps+tcp, that the device certificate
// (CN "uuid:<di>", chain already verified by the handshake) names deviceID.
// Plain coap+tcp connections carry no identity and pass.
func (s *session) checkCertIdentity(deviceID string) error {
	tc, ok := s.cc.NetConn().(*tls.Conn)
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return errors.New("no device certificate")
	}
	certDI, err := certs.DeviceIDFromCert(st.PeerCertificates[0])
	if err != nil {
		return errors.New("device certificate has no uuid:<di> common name")
	}
	if !strings.EqualFold(certDI, deviceID) {
		return fmt.Errorf("device certificate is for %s, not %s", certDI, deviceID)
	}
	return nil
}

// issuedToken is an access token the gateway received from authz itself.
type issuedToken struct {
	token, deviceID, userID string
	expires                 time.Time
}

// verifyAccessToken checks a sign-in token. The sign-in that follows a
// sign-up on the same connection presents the token authz has just handed
// to the gateway over its own authenticated call: its claims are known, and
// the signature check (an ES256 verify, the largest cost of an onboarding)
// would add nothing. Every other token is verified.
func (s *session) verifyAccessToken(ctx context.Context, raw string) (*auth.Claims, error) {
	s.mu.Lock()
	it := s.issued
	s.issued = nil
	s.mu.Unlock()
	if it != nil && subtle.ConstantTimeCompare([]byte(it.token), []byte(raw)) == 1 &&
		(it.expires.IsZero() || s.g.cfg.Now().Before(it.expires)) {
		return &auth.Claims{Subject: it.userID, DeviceID: it.deviceID, ExpiresAt: it.expires}, nil
	}
	return s.g.cfg.Verifier.Verify(ctx, raw)
}
