package coapgateway

import (
	"io"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/tcp/client"
)

// maxQueuedRequests bounds a device's requests waiting for the previous one;
// devices send one at a time, so more is a misbehaving peer (5.03).
const maxQueuedRequests = 16

// serial runs h off the connection's goroutine, one request of the
// connection at a time and in arrival order. The connection's goroutine also
// processes the device's answers to the cloud's requests (commands,
// observations), so it must never wait for authz, NATS or JetStream. It
// also keeps that long-lived goroutine's stack small: the deep calls of a
// sign-up grow a short-lived goroutine's stack, which is freed after.
func (g *Gateway) serial(h mux.HandlerFunc) mux.HandlerFunc {
	return func(w mux.ResponseWriter, r *mux.Message) {
		if !isRequest(r) {
			// A device answer that arrives after its request timed out has
			// no waiter left and lands here; it needs no answer.
			return
		}
		s := g.sessionOf(w)
		cc, ok := w.Conn().(*client.Conn)
		if s == nil || !ok {
			return
		}
		r.Hijack() // go-coap must not recycle the request before the job ran
		job := func() {
			defer cc.ReleaseMessage(r.Message)
			resp := cc.AcquireMessage(cc.Context())
			defer cc.ReleaseMessage(resp)
			resp.SetToken(r.Token())
			rw := &asyncWriter{w: responsewriter.New(resp, cc, r.Options()...)}
			h(rw, r)
			if resp.IsModified() && cc.Context().Err() == nil {
				if err := cc.WriteMessage(resp); err != nil {
					g.log.Debug("write answer", "remote", cc.RemoteAddr().String(), "err", err)
				}
			}
		}
		if !s.runSerial(job) {
			respondError(w, codes.ServiceUnavailable, "too many requests in flight")
			cc.ReleaseMessage(r.Message)
		}
	}
}

// runSerial queues job; false when the queue is full.
func (s *session) runSerial(job func()) bool {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if len(s.jobs) >= maxQueuedRequests {
		return false
	}
	s.jobs = append(s.jobs, job)
	if !s.jobRunning {
		s.jobRunning = true
		go s.runJobs()
	}
	return true
}

func (s *session) runJobs() {
	for {
		s.jmu.Lock()
		if len(s.jobs) == 0 {
			s.jobRunning = false
			s.jobs = nil
			s.jmu.Unlock()
			return
		}
		job := s.jobs[0]
		s.jobs[0] = nil
		s.jobs = s.jobs[1:]
		s.jmu.Unlock()
		job()
	}
}

// asyncWriter is a mux.ResponseWriter over a response the job writes itself.
type asyncWriter struct {
	w *responsewriter.ResponseWriter[*client.Conn]
}

func (a *asyncWriter) SetResponse(code codes.Code, cf message.MediaType, d io.ReadSeeker, opts ...message.Option) error {
	return a.w.SetResponse(code, cf, d, opts...)
}

func (a *asyncWriter) Conn() mux.Conn { return a.w.Conn() }

func (a *asyncWriter) SetMessage(m *pool.Message) { a.w.SetMessage(m) }

func (a *asyncWriter) Message() *pool.Message { return a.w.Message() }
