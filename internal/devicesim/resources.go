package devicesim

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

const (
	pathLight     = "/light/1"
	notifyTimeout = 5 * time.Second
)

// lightState is the representation of /light/1 (rt core.light).
type lightState struct {
	State bool   `cbor:"state" json:"state"`
	Power int64  `cbor:"power" json:"power"`
	Name  string `cbor:"name" json:"name"`
}

type deviceRep struct {
	Name string   `cbor:"n"`
	DI   string   `cbor:"di"`
	PIID string   `cbor:"piid"`
	RT   []string `cbor:"rt"`
	DMV  string   `cbor:"dmv"`
	ICV  string   `cbor:"icv"`
}

type platformRep struct {
	PI   string   `cbor:"pi"`
	MNMN string   `cbor:"mnmn"`
	RT   []string `cbor:"rt"`
}

var deviceRT = []string{"oic.wk.d", "oic.d.light"}

// links are the resources the device publishes; ins values are stable so the
// cloud can address a link for unpublish.
func (d *Device) links() []ocf.Link {
	mk := func(href string, ins int64, rt, ifs []string, bm int) ocf.Link {
		return ocf.Link{
			Href:       href,
			DeviceID:   d.cfg.DeviceID,
			RT:         rt,
			IF:         ifs,
			InstanceID: ins,
			Policy:     &ocf.Policy{BitMask: bm},
		}
	}
	return []ocf.Link{
		mk(ocf.PathDevice, 1, deviceRT, []string{"oic.if.r", "oic.if.baseline"}, 1),
		mk(ocf.PathPlatform, 2, []string{"oic.wk.p"}, []string{"oic.if.r", "oic.if.baseline"}, 1),
		mk(pathLight, 3, []string{"core.light"}, []string{"oic.if.rw", "oic.if.baseline"}, 3),
	}
}

// SetLight changes /light/1 and notifies its observers.
func (d *Device) SetLight(state bool, power int) {
	d.lightMu.Lock()
	d.light.State, d.light.Power = state, int64(power)
	d.lightMu.Unlock()
	d.notifyObservers()
}

// Light returns the current representation of /light/1.
func (d *Device) Light() (state bool, power int, name string) {
	d.lightMu.Lock()
	defer d.lightMu.Unlock()
	return d.light.State, int(d.light.Power), d.light.Name
}

func (d *Device) lightRep() lightState {
	d.lightMu.Lock()
	defer d.lightMu.Unlock()
	return d.light
}

// serve answers the cloud's requests on the device connection.
func (d *Device) serve(w mux.ResponseWriter, r *mux.Message) {
	if r.Code() == codes.Empty || r.Code()>>5 != 0 {
		// Not a request: a late answer to a request that already timed out
		// (a slow sign-up) lands here. Answering it would confuse the cloud.
		return
	}
	path, _ := r.Options().Path()
	switch path {
	case ocf.PathDevice:
		if r.Code() != codes.GET {
			d.reply(w, codes.MethodNotAllowed, nil)
			return
		}
		d.reply(w, codes.Content, deviceRep{
			Name: d.cfg.Name, DI: d.cfg.DeviceID, PIID: d.piid, RT: deviceRT,
			DMV: "ocf.res.1.3.0", ICV: "ocf.2.0.5",
		})
	case ocf.PathPlatform:
		if r.Code() != codes.GET {
			d.reply(w, codes.MethodNotAllowed, nil)
			return
		}
		d.reply(w, codes.Content, platformRep{PI: d.pi, MNMN: "ocfcloud", RT: []string{"oic.wk.p"}})
	case pathLight:
		d.serveLight(w, r)
	default:
		d.replyText(w, codes.NotFound, "no resource at "+path)
	}
}

func (d *Device) serveLight(w mux.ResponseWriter, r *mux.Message) {
	switch r.Code() {
	case codes.GET:
		obs, err := r.Options().Observe()
		switch {
		case err == nil && obs == 0:
			d.registerObserver(w, r)
		case err == nil && obs == 1:
			d.removeObserver(w.Conn(), r.Token())
			d.reply(w, codes.Content, d.lightRep())
		default:
			d.reply(w, codes.Content, d.lightRep())
		}
	case codes.POST:
		body, err := r.ReadBody()
		if err != nil {
			d.replyText(w, codes.BadRequest, "cannot read body")
			return
		}
		if err := d.updateLight(body); err != nil {
			d.replyText(w, codes.BadRequest, err.Error())
			return
		}
		d.reply(w, codes.Changed, d.lightRep())
		d.notifyObservers()
	default:
		d.replyText(w, codes.MethodNotAllowed, "method not allowed on "+pathLight)
	}
}

// updateLight merges a CBOR update into the light. Every property is checked
// before any is applied, so a bad update changes nothing.
func (d *Device) updateLight(body []byte) error {
	if len(body) == 0 {
		return fmt.Errorf("empty body")
	}
	var upd map[string]any
	if err := ocf.Unmarshal(body, &upd); err != nil {
		return fmt.Errorf("body is not a CBOR map: %w", err)
	}
	var (
		state    *bool
		power    *int64
		name     *string
		knownKey bool
	)
	for k, v := range upd {
		switch k {
		case "state":
			b, ok := v.(bool)
			if !ok {
				return fmt.Errorf("state must be a boolean, got %T", v)
			}
			state, knownKey = &b, true
		case "power":
			i, ok := v.(int64)
			if !ok {
				return fmt.Errorf("power must be an integer, got %T", v)
			}
			power, knownKey = &i, true
		case "name":
			s, ok := v.(string)
			if !ok {
				return fmt.Errorf("name must be a string, got %T", v)
			}
			name, knownKey = &s, true
		}
	}
	if !knownKey {
		return fmt.Errorf("no writable property (state, power, name) in the update")
	}
	d.lightMu.Lock()
	defer d.lightMu.Unlock()
	if state != nil {
		d.light.State = *state
	}
	if power != nil {
		d.light.Power = *power
	}
	if name != nil {
		d.light.Name = *name
	}
	return nil
}

// reply answers with an OCF CBOR representation (or no body when v is nil).
func (d *Device) reply(w mux.ResponseWriter, code codes.Code, v any) {
	if v == nil {
		d.replyText(w, code, "")
		return
	}
	payload, err := ocf.Marshal(v)
	if err != nil {
		d.replyText(w, codes.InternalServerError, "cannot encode representation")
		return
	}
	opt := message.Option{ID: ocf.OptionContentVersion, Value: encodeUint(ocf.Version1)}
	if err := w.SetResponse(code, ocf.ContentFormatCBOR, bytes.NewReader(payload), opt); err != nil {
		d.log.Warn("cannot set response", "error", err)
	}
}

// replyText answers an error with a diagnostic payload.
func (d *Device) replyText(w mux.ResponseWriter, code codes.Code, diag string) {
	var body *bytes.Reader
	if diag != "" {
		body = bytes.NewReader([]byte(diag))
	}
	var err error
	if body == nil {
		err = w.SetResponse(code, message.TextPlain, nil)
	} else {
		err = w.SetResponse(code, message.TextPlain, body)
	}
	if err != nil {
		d.log.Warn("cannot set response", "error", err)
	}
}

// writeNotification sends one 2.05 with the observe sequence number.
func (d *Device) writeNotification(o observer, seq uint32, payload []byte) error {
	ctx, cancel := context.WithTimeout(o.conn.Context(), notifyTimeout)
	defer cancel()
	m := o.conn.AcquireMessage(ctx)
	defer o.conn.ReleaseMessage(m)
	m.SetCode(codes.Content)
	m.SetToken(o.token)
	m.SetObserve(seq)
	m.SetContentFormat(ocf.ContentFormatCBOR)
	m.SetOptionUint32(ocf.OptionContentVersion, ocf.Version1)
	m.SetBody(bytes.NewReader(payload))
	return o.conn.WriteMessage(m)
}
