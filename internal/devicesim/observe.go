package devicesim

import (
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// observer is one observation of /light/1: the connection and the token the
// cloud used in its GET with Observe=0. Notifications reuse that token.
type observer struct {
	conn  mux.Conn
	token message.Token
}

type observerKey struct {
	conn  mux.Conn
	token string
}

// nextSeq returns the next observe sequence number (24 bits, RFC 7641).
// Callers hold obsMu.
func (d *Device) nextSeq() uint32 {
	d.obsSeq = (d.obsSeq + 1) & 0xffffff
	return d.obsSeq
}

// registerObserver answers a GET with Observe=0 itself, rather than through
// the response writer, so that the answer is on the wire before any
// notification with a higher sequence number can be sent.
func (d *Device) registerObserver(w mux.ResponseWriter, r *mux.Message) {
	conn := w.Conn()
	token := append(message.Token(nil), r.Token()...)
	if len(token) == 0 {
		d.replyText(w, codes.BadRequest, "observe needs a token")
		return
	}
	d.obsMu.Lock()
	defer d.obsMu.Unlock()
	rep := d.lightRep()
	payload, err := ocf.Marshal(rep)
	if err != nil {
		d.replyText(w, codes.InternalServerError, "cannot encode representation")
		return
	}
	o := observer{conn: conn, token: token}
	seq := d.nextSeq()
	if err := d.writeNotification(o, seq, payload); err != nil {
		d.log.Warn("cannot answer observe", "error", err)
		return
	}
	d.sentLocked(conn, seq, rep)
	d.observers[observerKey{conn: conn, token: string(token)}] = o
	d.log.Info("observer registered", "href", pathLight, "observers", len(d.observers))
}

func (d *Device) removeObserver(conn mux.Conn, token message.Token) {
	d.obsMu.Lock()
	defer d.obsMu.Unlock()
	delete(d.observers, observerKey{conn: conn, token: string(token)})
}

// dropObservers forgets every observation made over a closed connection.
func (d *Device) dropObservers(conn mux.Conn) {
	d.obsMu.Lock()
	defer d.obsMu.Unlock()
	for k := range d.observers {
		if k.conn == conn {
			delete(d.observers, k)
		}
	}
	delete(d.unacked, conn) // never acknowledged
}

// notifyObservers sends the current light to every observer. A failed write
// drops that observer: the cloud re-observes after it reconnects.
func (d *Device) notifyObservers() {
	d.obsMu.Lock()
	defer d.obsMu.Unlock()
	if len(d.observers) == 0 {
		return
	}
	rep := d.lightRep()
	payload, err := ocf.Marshal(rep)
	if err != nil {
		d.log.Error("cannot encode light", "error", err)
		return
	}
	seq := d.nextSeq()
	for k, o := range d.observers {
		if err := d.writeNotification(o, seq, payload); err != nil {
			d.log.Warn("notification failed, dropping observer", "error", err)
			delete(d.observers, k)
			continue
		}
		d.sentLocked(o.conn, seq, rep)
	}
}
