package gatewaybench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
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
// and real devices run elsewhere. It signs in, then only reads: it answers
// pings, and any request of the gateway with 4.04 (storm devices publish
// nothing, so the gateway has nothing to observe).
type rawDevice struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialRawDevice connects from src (when valid) and signs in.
func dialRawDevice(ctx context.Context, addr string, src netip.Addr, di, uid, token string) (*rawDevice, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	dev := &rawDevice{conn: conn, r: bufio.NewReaderSize(conn, 512)}
	if err := dev.signIn(di, uid, token); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return dev, nil
}

var signInToken = message.Token("signin01")

func (d *rawDevice) signIn(di, uid, token string) error {
	body, err := ocf.Marshal(ocf.SessionRequest{DeviceID: di, UserID: uid, AccessToken: token, Login: true})
	if err != nil {
		return err
	}
	opts := message.Options{
		{ID: message.URIPath, Value: []byte("oic")},
		{ID: message.URIPath, Value: []byte("sec")},
		{ID: message.URIPath, Value: []byte("session")},
		{ID: message.ContentFormat, Value: ocf.Uint16Bytes(uint16(ocf.ContentFormatCBOR))},
	}
	opts = append(opts, ocfOptions()...)
	frame, err := encodeFrame(message.Message{Code: codes.POST, Token: signInToken, Options: opts, Payload: body})
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
		if m.Code >= codes.CSM || string(m.Token) != string(signInToken) {
			continue // the gateway's CSM
		}
		if m.Code != codes.Changed {
			return fmt.Errorf("sign-in: %v %s", m.Code, m.Payload)
		}
		return nil
	}
}

// serve reads until the connection ends, answering pings and requests.
func (d *rawDevice) serve() {
	defer d.conn.Close()
	for {
		m, err := d.read()
		if err != nil {
			return
		}
		var answer codes.Code
		switch {
		case m.Code == codes.Ping:
			answer = codes.Pong
		case m.Code >= codes.GET && m.Code < 32:
			answer = codes.NotFound
		default:
			continue
		}
		frame, err := encodeFrame(message.Message{Code: answer, Token: m.Token})
		if err != nil {
			return
		}
		if _, err := d.conn.Write(frame); err != nil {
			return
		}
	}
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
