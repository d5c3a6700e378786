package webhook

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Received is one verified request a Receiver got.
type Received struct {
	Delivery
	Body []byte
	At   time.Time
}

// Receiver is a webhook endpoint that verifies the OCF and the Standard
// Webhooks signature of every request with Secret, answers 401 to a request
// that fails either check and records the others.
type Receiver struct {
	// Secret is the signingSecret of the subscriptions that deliver here.
	Secret string
	// Respond, when set, chooses the status of a verified request (default
	// 204); tests use it to fail or cancel deliveries.
	Respond func(Received) int
	// OnReceive, when set, is called for every verified request.
	OnReceive func(Received)
	// Tolerance for webhook-timestamp; default 5 minutes as the Standard
	// Webhooks libraries use.
	Tolerance time.Duration

	mu       sync.Mutex
	got      []Received
	rejected int
}

// ServeHTTP verifies and records one delivery.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil || r.Method != http.MethodPost {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	tol := rc.Tolerance
	if tol == 0 {
		tol = 5 * time.Minute
	}
	now := time.Now()
	d, err := VerifyOCF(r.Header, rc.Secret, body)
	if err == nil {
		err = VerifyStandard(r.Header, StandardSecret(rc.Secret), body, now, tol)
	}
	if err != nil {
		rc.mu.Lock()
		rc.rejected++
		rc.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	got := Received{Delivery: d, Body: body, At: now}
	status := http.StatusNoContent
	if rc.Respond != nil {
		status = rc.Respond(got)
	}
	if status >= 200 && status < 300 || status == http.StatusGone {
		rc.mu.Lock()
		rc.got = append(rc.got, got)
		rc.mu.Unlock()
		if rc.OnReceive != nil {
			rc.OnReceive(got)
		}
	}
	w.WriteHeader(status)
}

// Received returns a copy of every accepted delivery (2xx or 410), in
// arrival order.
func (rc *Receiver) Received() []Received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Received(nil), rc.got...)
}

// Rejected counts requests whose signatures did not verify.
func (rc *Receiver) Rejected() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.rejected
}

// Reset forgets what was received.
func (rc *Receiver) Reset() {
	rc.mu.Lock()
	rc.got, rc.rejected = nil, 0
	rc.mu.Unlock()
}

// Serve runs h on a new listener at addr ("127.0.0.1:0" for a random
// port) and returns its base URL and a function that stops it.
func Serve(addr string, h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err
		}
	}()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
	return "http://" + ln.Addr().String(), stop, nil
}
