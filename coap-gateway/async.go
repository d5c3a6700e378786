package coapgateway

import (
	"io"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// handlerFunc handles one request of a device on its session.
type handlerFunc func(w *responseWriter, r *pool.Message)

// responseWriter collects a handler's answer; the job writes it after the
// handler returns.
type responseWriter struct {
	s    *session
	resp *pool.Message
	set  bool
}

// SetResponse sets the answer's code, options and, when d is not nil, its
// content format and body.
func (w *responseWriter) SetResponse(code codes.Code, cf message.MediaType, d io.ReadSeeker, opts ...message.Option) error {
	w.set = true
	w.resp.SetCode(code)
	w.resp.ResetOptionsTo(opts)
	if d != nil {
		w.resp.SetContentFormat(cf)
		w.resp.SetBody(d)
	}
	return nil
}

// maxQueuedRequests bounds a device's requests waiting for the previous one;
// devices send one at a time, so more is a misbehaving peer (5.03).
const maxQueuedRequests = 16

// handle runs h for request r off the connection's reader, one request of
// the connection at a time and in arrival order. The reader also delivers
// the device's answers to the cloud's requests (commands, observations), so
// it must never wait for authz, NATS or JetStream. It also keeps that
// long-lived goroutine's stack small: the deep calls of a sign-up grow a
// short-lived goroutine's stack, which is freed after. handle owns r.
func (s *session) handle(h handlerFunc, r *pool.Message) {
	c := s.cc
	job := func() {
		defer c.srv.pool.ReleaseMessage(r)
		resp := c.srv.pool.AcquireMessage(c.ctx)
		defer c.srv.pool.ReleaseMessage(resp)
		resp.SetToken(r.Token())
		w := &responseWriter{s: s, resp: resp}
		h(w, r)
		if w.set && c.ctx.Err() == nil {
			if err := c.write(resp); err != nil {
				s.g.log.Debug("write answer", "remote", c.RemoteAddr().String(), "err", err)
			}
		}
	}
	if !s.runSerial(job) {
		c.answerNow(r, codes.ServiceUnavailable, "too many requests in flight")
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
		s.g.workers.run(s.runJobs)
	}
	return true
}

// workerPool runs functions on goroutines that outlive one function. A
// request's deep calls (token verification, authz over HTTP, JetStream)
// grow a goroutine's stack from 4 KB to 16 KB or more, copying it at every
// doubling; on a fresh goroutine per request that copying was ~7 % of the
// gateway's CPU in a reconnect storm. A worker keeps its grown stack for the
// next request and ends after idle without work, so idle devices cost no
// goroutine.
type workerPool struct {
	handoff chan func() // unbuffered: taken only by a waiting worker
	idle    time.Duration
}

func newWorkerPool(idle time.Duration) *workerPool {
	return &workerPool{handoff: make(chan func()), idle: idle}
}

// run runs f on an idle worker, or on a new one when none waits.
func (p *workerPool) run(f func()) {
	select {
	case p.handoff <- f:
	default:
		go p.work(f)
	}
}

func (p *workerPool) work(f func()) {
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		f()
		t.Reset(p.idle)
		select {
		case f = <-p.handoff:
		case <-t.C:
			return
		}
	}
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
