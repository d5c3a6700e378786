package coapgateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/ocfcloud/ocfcloud/internal/commands"
	"github.com/ocfcloud/ocfcloud/internal/events"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// commandRouter delivers commands from NATS to sessions.
//
// Each signed-in session subscribes to commands.Subject(di) while it is
// signed in, so NATS routes a command to the one gateway holding the device
// and answers "no responders" when none does. All subscriptions share one
// channel (nats.go starts no goroutine for channel subscriptions), and a few
// dispatchers look the session up by subscription: memory per device stays
// one subscription, whatever the number of devices.
type commandRouter struct {
	ch chan *nats.Msg
	// subs finds the session of a subscription; a plain map (~50 bytes an
	// entry) rather than a sync.Map (~200).
	mu   sync.RWMutex
	subs map[*nats.Subscription]*session
	stop chan struct{}
	wg   sync.WaitGroup
}

const (
	commandQueue       = 8192
	commandDispatchers = 2
)

func (g *Gateway) startCommands() error {
	g.cmd.ch = make(chan *nats.Msg, commandQueue)
	g.cmd.subs = map[*nats.Subscription]*session{}
	g.cmd.stop = make(chan struct{})
	for range commandDispatchers {
		g.cmd.wg.Add(1)
		go func() {
			defer g.cmd.wg.Done()
			for {
				select {
				case <-g.cmd.stop:
					return
				case m := <-g.cmd.ch:
					g.dispatchCommand(m)
				}
			}
		}()
	}
	return nil
}

func (g *Gateway) stopCommands() {
	if g.cmd.stop == nil {
		return
	}
	select {
	case <-g.cmd.stop:
	default:
		close(g.cmd.stop)
	}
	g.cmd.wg.Wait()
}

// dispatchCommand never blocks: the device request runs on its own goroutine.
func (g *Gateway) dispatchCommand(m *nats.Msg) {
	g.cmd.mu.RLock()
	s, ok := g.cmd.subs[m.Sub]
	g.cmd.mu.RUnlock()
	if !ok {
		// The session ended between NATS routing the command and now.
		g.answer(m, failure(codes.ServiceUnavailable, commands.ErrCodeOffline, "device disconnected"))
		return
	}
	s.command(m)
}

func (g *Gateway) answer(m *nats.Msg, r *commands.Response) {
	data, err := json.Marshal(r)
	if err == nil {
		err = m.Respond(data)
	}
	if err != nil {
		g.log.Warn("cannot answer command", "err", err)
	}
}

func failure(code codes.Code, errCode, diag string) *commands.Response {
	return &commands.Response{Code: codeString(code), Error: errCode, ContentType: "text/plain", Content: []byte(diag)}
}

// subscribeCommands makes this session the receiver of deviceID's commands.
// It is called before the online event is published: NATS processes the
// SUB before the JetStream publish on the same connection, so by the time
// the device is reported online, commands reach it.
func (s *session) subscribeCommands(deviceID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmdSub != nil && s.cmdSub.Subject == commands.Subject(deviceID) {
		return nil
	}
	s.unsubscribeLocked()
	sub, err := s.g.cfg.NATS.ChanSubscribe(commands.Subject(deviceID), s.g.cmd.ch)
	if err != nil {
		return fmt.Errorf("subscribe commands of %s: %w", deviceID, err)
	}
	s.g.cmd.mu.Lock()
	s.g.cmd.subs[sub] = s
	s.g.cmd.mu.Unlock()
	s.cmdSub = sub
	return nil
}

func (s *session) unsubscribeCommands() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unsubscribeLocked()
}

func (s *session) unsubscribeLocked() {
	if s.cmdSub == nil {
		return
	}
	s.g.cmd.mu.Lock()
	delete(s.g.cmd.subs, s.cmdSub)
	s.g.cmd.mu.Unlock()
	if err := s.cmdSub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		s.g.log.Debug("unsubscribe commands", "subject", s.cmdSub.Subject, "err", err)
	}
	s.cmdSub = nil
}

// command admits one command and answers it from a new goroutine: the device
// answer is read by the connection's goroutine, which must stay free.
func (s *session) command(m *nats.Msg) {
	var req commands.Request
	if err := json.Unmarshal(m.Data, &req); err != nil {
		s.g.answer(m, failure(codes.BadRequest, commands.ErrCodeBadRequest, "command is not valid JSON"))
		return
	}
	if req.Method == commands.MethodSignOff {
		go s.g.answer(m, s.g.signOffCommand(s, &req))
		return
	}
	if n := s.pending.Add(1); int(n) > s.g.cfg.MaxPendingPerDevice {
		s.pending.Add(-1)
		s.g.answer(m, failure(codes.ServiceUnavailable, commands.ErrCodeBusy,
			fmt.Sprintf("device has %d requests in flight", s.g.cfg.MaxPendingPerDevice)))
		return
	}
	go func() {
		defer s.pending.Add(-1)
		s.g.answer(m, s.deviceRequest(&req))
	}()
}

// signOffCommand ends the device's sessions on this gateway after another
// service unregistered it (C2C DELETE /api/v1/devices/{id}).
func (g *Gateway) signOffCommand(s *session, req *commands.Request) *commands.Response {
	_, di, _ := s.identity()
	local := g.sessionsOf(di)
	if !slices.Contains(local, s) {
		local = append(local, s)
	}
	for _, o := range local {
		o.setGone(di, true)
		o.signedOff(di)
		o.closeSoon()
	}
	g.log.Info("device signed off by the cloud", "device_id", di, "request_id", req.CorrelationID)
	return &commands.Response{Code: codeString(codes.Deleted)}
}

// deviceRequest sends one command to the device and waits for its answer.
func (s *session) deviceRequest(req *commands.Request) *commands.Response {
	var code codes.Code
	switch strings.ToUpper(req.Method) {
	case commands.MethodGet:
		code = codes.GET
	case commands.MethodPost:
		code = codes.POST
	case commands.MethodPut:
		code = codes.PUT
	case commands.MethodDelete:
		code = codes.DELETE
	default:
		return failure(codes.BadRequest, commands.ErrCodeBadRequest, fmt.Sprintf("unknown method %q", req.Method))
	}
	if !strings.HasPrefix(req.Href, "/") || len(req.Href) > 512 || strings.Contains(req.Href, "?") {
		return failure(codes.BadRequest, commands.ErrCodeBadRequest, "href must be an absolute path without query")
	}
	body, cf, err := deviceBody(req.ContentType, req.Content)
	if err != nil {
		return failure(codes.BadRequest, commands.ErrCodeBadRequest, err.Error())
	}
	timeout := s.g.cfg.DeviceTimeout
	if req.TimeoutMillis > 0 {
		timeout = min(time.Duration(req.TimeoutMillis)*time.Millisecond, s.g.cfg.MaxDeviceTimeout)
	}
	ctx, cancel := s.callContext(timeout)
	defer cancel()

	msg, err := s.cc.newRequest(ctx, code, req.Href)
	if err != nil {
		return failure(codes.BadRequest, commands.ErrCodeBadRequest, "bad href: "+err.Error())
	}
	defer s.cc.srv.pool.ReleaseMessage(msg)
	if req.Query != "" {
		for _, q := range strings.Split(req.Query, "&") {
			if q != "" {
				msg.AddQuery(q)
			}
		}
	}
	if body != nil {
		msg.SetContentFormat(cf)
		if cf == ocf.ContentFormatCBOR {
			msg.AddOptionBytes(ocf.OptionContentVersion, ocf.Uint16Bytes(uint16(ocf.Version1)))
		}
		msg.SetBody(bytes.NewReader(body))
	}
	resp, err := s.cc.do(ctx, msg)
	if err != nil {
		if s.ctx.Err() != nil {
			return failure(codes.ServiceUnavailable, commands.ErrCodeOffline, "device disconnected")
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return failure(codes.GatewayTimeout, commands.ErrCodeTimeout, fmt.Sprintf("device did not answer within %v", timeout))
		}
		return failure(codes.ServiceUnavailable, commands.ErrCodeOffline, "device request failed")
	}
	defer s.cc.srv.pool.ReleaseMessage(resp)
	return deviceAnswer(resp)
}

// deviceBody converts a command's content to what a device understands:
// JSON becomes OCF CBOR; CBOR passes through.
func deviceBody(contentType string, content []byte) ([]byte, message.MediaType, error) {
	if len(content) == 0 {
		return nil, 0, nil
	}
	ct, _, _ := strings.Cut(contentType, ";")
	switch strings.TrimSpace(strings.ToLower(ct)) {
	case events.ContentTypeJSON, "text/json":
		b, err := ocf.JSONToCBOR(content)
		if err != nil {
			return nil, 0, err
		}
		return b, ocf.ContentFormatCBOR, nil
	case "", events.ContentTypeOCFCBOR:
		return content, ocf.ContentFormatCBOR, nil
	case "application/cbor":
		return content, message.AppCBOR, nil
	default:
		return nil, 0, fmt.Errorf("content type %q is not supported (use application/json or application/vnd.ocf+cbor)", contentType)
	}
}

func deviceAnswer(resp *pool.Message) *commands.Response {
	out := &commands.Response{Code: codeString(resp.Code())}
	if b := resp.Body(); b != nil {
		data, err := io.ReadAll(b)
		if err == nil && len(data) > 0 {
			out.Content = data
			out.ContentType = mediaTypeName(resp)
		}
	}
	return out
}

func mediaTypeName(m *pool.Message) string {
	cf, err := m.ContentFormat()
	if err != nil {
		return events.ContentTypeOCFCBOR
	}
	switch cf {
	case ocf.ContentFormatCBOR:
		return events.ContentTypeOCFCBOR
	case message.AppCBOR:
		return "application/cbor"
	case message.AppJSON:
		return events.ContentTypeJSON
	case message.TextPlain:
		return "text/plain"
	default:
		return cf.String()
	}
}

// codeString formats a CoAP code as "c.dd" (e.g. "2.05").
func codeString(c codes.Code) string { return fmt.Sprintf("%d.%02d", uint8(c)>>5, uint8(c)&0x1f) }
