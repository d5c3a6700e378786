package devicesim

import (
	"encoding/json"
	"time"

	"github.com/plgd-dev/go-coap/v3/mux"
)

// Ack is one representation of /light/1 (an observe answer or a
// notification) that the cloud has provably read.
//
// CoAP over TCP has no acknowledgement of a notification: the reliable
// transport replaces CON/ACK. What a device can know is that the gateway
// answered a 7.02 Ping it sent after the notification on the same
// connection: TCP delivers in order and the peer reads one connection's
// messages in order, so the pong proves the gateway read the notification.
// That is what Ack reports; whether the cloud made the change durable before
// answering is for the cloud's tests to check.
type Ack struct {
	DeviceID string
	Href     string
	// Seq is the observe sequence number; it rises with every
	// representation the device sends to any observer.
	Seq   uint32
	Sent  time.Time       // written to the connection
	Acked time.Time       // the pong that followed arrived
	Value json.RawMessage // the representation as JSON
}

// sentLocked remembers a representation written on conn until the next
// pong. Callers hold obsMu.
func (d *Device) sentLocked(conn mux.Conn, seq uint32, rep lightState) {
	if d.cfg.Acknowledged == nil {
		return
	}
	v, _ := json.Marshal(rep)
	if d.unacked == nil {
		d.unacked = map[mux.Conn][]Ack{}
	}
	d.unacked[conn] = append(d.unacked[conn], Ack{DeviceID: d.cfg.DeviceID, Href: pathLight, Seq: seq, Sent: time.Now(), Value: v})
}

// takeUnacked hands over what was written on conn since the last pong.
func (d *Device) takeUnacked(conn mux.Conn) []Ack {
	if d.cfg.Acknowledged == nil {
		return nil
	}
	d.obsMu.Lock()
	defer d.obsMu.Unlock()
	a := d.unacked[conn]
	delete(d.unacked, conn)
	return a
}

// acknowledge reports representations written before a ping that was
// answered.
func (d *Device) acknowledge(acks []Ack) {
	now := time.Now()
	for _, a := range acks {
		a.Acked = now
		d.cfg.Acknowledged(a)
	}
}
