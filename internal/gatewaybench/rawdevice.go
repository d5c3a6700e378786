package gatewaybench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/tcp/coder"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// rawDevice is the reconnect storm's device: CoAP over TCP written and read
// directly on the socket, one goroutine per device. A go-coap client
// connection costs three goroutines and about twice the CPU per reconnect;
// the storm's devices share the two cores with the gateways they measure,
// and real devices run elsewhere. It makes requests one at a time and
// answers the gateway's: pings, reads and observations of its light.
type rawDevice struct {
	conn net.Conn
	r    *bufio.Reader
	seq  int // numbers the tokens of its requests
}

// dialRawDevice connects from src (when valid) and signs in.
func dialRawDevice(ctx context.Context, addr string, src netip.Addr, di, uid, token string) (*rawDevice, error) {
	dev, err := dialRaw(ctx, addr, src, nil)
	if err != nil {
		return nil, err
	}
	if err := dev.signIn(di, uid, token); err != nil {
		_ = dev.conn.Close()
		return nil, err
	}
	return dev, nil
}

// dialRaw connects from src (when valid), over TLS when tlsCfg is set
// (the handshake done before it returns).
func dialRaw(ctx context.Context, addr string, src netip.Addr, tlsCfg *tls.Config) (*rawDevice, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	var conn net.Conn
	var err error
	if tlsCfg != nil {
		conn, err = (&tls.Dialer{NetDialer: d, Config: tlsCfg}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	return &rawDevice{conn: conn, r: bufio.NewReaderSize(conn, 512)}, nil
}

// request sends a request with an OCF CBOR body (nil: none) and waits for
// its answer, answering the gateway's pings and requests meanwhile; the
// answer's payload is decoded into out unless out is nil. A code other
// than want is an error.
func (d *rawDevice) request(code codes.Code, path string, body, out any, want codes.Code) error {
	d.seq++
	token := message.Token(fmt.Sprintf("req%05d", d.seq%100000))
	opts := make(message.Options, 0, 8)
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		opts = append(opts, message.Option{ID: message.URIPath, Value: []byte(seg)})
	}
	var payload []byte
	if body != nil {
		var err error
		if payload, err = ocf.Marshal(body); err != nil {
			return err
		}
		opts = append(opts, message.Option{ID: message.ContentFormat, Value: ocf.Uint16Bytes(uint16(ocf.ContentFormatCBOR))})
	}
	opts = append(opts, ocfOptions()...)
	frame, err := encodeFrame(message.Message{Code: code, Token: token, Options: opts, Payload: payload})
	if err != nil {
		return err
	}
	_ = d.conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = d.conn.SetDeadline(time.Time{}) }()
	if _, err := d.conn.Write(frame); err != nil {
		return err
	}
	for {
		m, err := d.read()
		if err != nil {
			return err
		}
		if string(m.Token) != string(token) || m.Code < codes.Created || m.Code >= codes.CSM {
			if err := d.answer(m); err != nil {
				return err
			}
			continue
		}
		if m.Code != want {
			return fmt.Errorf("%s: %v %s", path, m.Code, m.Payload)
		}
		if out != nil {
			return ocf.Unmarshal(m.Payload, out)
		}
		return nil
	}
}

func (d *rawDevice) signIn(di, uid, token string) error {
	return d.request(codes.POST, ocf.PathSession, ocf.SessionRequest{DeviceID: di, UserID: uid, AccessToken: token, Login: true}, nil, codes.Changed)
}

// onboard signs up with a code the stand-in token endpoint accepts, signs
// in and publishes a light, as onboard does with a go-coap client.
func (d *rawDevice) onboard(di string, st *stepTimes) error {
	t0 := time.Now()
	var up ocf.SignUpResponse
	if err := d.request(codes.POST, ocf.PathAccount, signUpRequest(di), &up, codes.Changed); err != nil {
		return err
	}
	t1 := time.Now()
	if err := d.signIn(di, up.UserID, up.AccessToken); err != nil {
		return err
	}
	t2 := time.Now()
	err := d.request(codes.POST, ocf.PathRD, publishRequest(di), nil, codes.Changed)
	st.add(t0, t1, t2)
	return err
}

// serve reads until the connection ends, answering pings and requests.
func (d *rawDevice) serve() {
	defer d.conn.Close()
	for {
		m, err := d.read()
		if err != nil {
			return
		}
		if err := d.answer(m); err != nil {
			return
		}
	}
}

// answer answers a ping with a pong and a request of the gateway: a GET
// (a read or an observation) with the light's representation, anything
// else with 4.04. Other messages need no answer.
func (d *rawDevice) answer(m message.Message) error {
	var reply message.Message
	switch {
	case m.Code == codes.Ping:
		reply = message.Message{Code: codes.Pong, Token: m.Token}
	case m.Code == codes.GET:
		reply = message.Message{Code: codes.Content, Token: m.Token, Payload: lightRep,
			Options: message.Options{{ID: message.ContentFormat, Value: ocf.Uint16Bytes(uint16(ocf.ContentFormatCBOR))}}}
		if obs, err := m.Options.Observe(); err == nil && obs == 0 {
			reply.Options = append(message.Options{{ID: message.Observe, Value: []byte{1}}}, reply.Options...)
		}
	case m.Code >= codes.POST && m.Code < 32:
		reply = message.Message{Code: codes.NotFound, Token: m.Token}
	default:
		return nil
	}
	frame, err := encodeFrame(reply)
	if err != nil {
		return err
	}
	_, err = d.conn.Write(frame)
	return err
}

// read reads one frame.
func (d *rawDevice) read() (message.Message, error) {
	m := message.Message{Options: make(message.Options, 0, 16)}
	hdr, err := d.r.Peek(1)
	if err != nil {
		return m, err
	}
	// The header is at most 1 + 4 + 1 + 8 bytes; peek what is buffered.
	for n := 2; ; n++ {
		var h coder.MessageHeader
		buf, perr := d.r.Peek(n)
		if _, err := coder.DefaultCoder.DecodeHeader(buf, &h); err == nil {
			frame := make([]byte, h.MessageLength)
			if _, err := io.ReadFull(d.r, frame); err != nil {
				return m, err
			}
			_, err = coder.DefaultCoder.Decode(frame, &m)
			return m, err
		} else if !errors.Is(err, message.ErrShortRead) {
			return m, err
		}
		if perr != nil {
			return m, perr
		}
		if n > 14 {
			return m, fmt.Errorf("bad frame header % x", hdr)
		}
	}
}

func encodeFrame(m message.Message) ([]byte, error) {
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	n, err := coder.DefaultCoder.Encode(m, buf)
	return buf[:n], err
}
