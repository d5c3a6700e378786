package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// DefaultDeny are the ranges refused unless explicitly allowed: link-local
// (where cloud metadata services live: 169.254.169.254, fd00:ec2::254 is
// covered separately), the cloud metadata addresses outside link-local,
// "this network", multicast and broadcast. Loopback and private ranges are
// allowed by default, so `ocfcloud serve` on a laptop can call a local
// receiver; production deployments add them to the deny list
// (see DenyPrivateRanges).
var DefaultDeny = []string{
	"169.254.0.0/16",     // IPv4 link-local, incl. 169.254.169.254 metadata
	"fe80::/10",          // IPv6 link-local
	"100.100.100.200/32", // Alibaba Cloud metadata
	"fd00:ec2::254/128",  // AWS IMDS over IPv6
	"0.0.0.0/8",          // "this network"
	"224.0.0.0/4",        // multicast
	"ff00::/8",           // IPv6 multicast
	"255.255.255.255/32",
	"::/128",
}

// DenyPrivateRanges are loopback, private, shared (CGNAT) and unique-local
// ranges; operators who run ocfcloud next to other internal services deny
// them so subscribers cannot reach those services.
var DenyPrivateRanges = []string{
	"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
	"100.64.0.0/10", "fc00::/7", "::ffff:0:0/96",
}

// Policy decides which destination addresses webhooks may reach. An
// address in Allow is reachable even when a Deny range contains it; any
// other address in Deny is refused.
type Policy struct {
	Allow []netip.Prefix
	Deny  []netip.Prefix
}

// NewPolicy builds a policy from CIDR strings: DefaultDeny plus deny (and
// DenyPrivateRanges when denyPrivate), with allow taking precedence. It
// reports every malformed entry at once.
func NewPolicy(allow, deny []string, denyPrivate bool) (*Policy, error) {
	var errs []error
	parse := func(list []string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range list {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if !strings.Contains(s, "/") {
				if a, err := netip.ParseAddr(s); err == nil {
					out = append(out, netip.PrefixFrom(a, a.BitLen()))
					continue
				}
			}
			p, err := netip.ParsePrefix(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("webhook address range %q: %w", s, err))
				continue
			}
			out = append(out, p.Masked())
		}
		return out
	}
	d := append([]string{}, DefaultDeny...)
	if denyPrivate {
		d = append(d, DenyPrivateRanges...)
	}
	p := &Policy{Allow: parse(allow), Deny: parse(append(d, deny...))}
	return p, errors.Join(errs...)
}

// ErrDenied is returned for a destination the policy refuses.
var ErrDenied = errors.New("webhook: destination address is not allowed")

// Check reports whether addr may be called.
func (p *Policy) Check(addr netip.Addr) error {
	addr = addr.Unmap()
	for _, a := range p.Allow {
		if a.Contains(addr) {
			return nil
		}
	}
	for _, d := range p.Deny {
		if d.Contains(addr) {
			return fmt.Errorf("%w: %s is in %s", ErrDenied, addr, d)
		}
	}
	return nil
}

// ValidateURL checks an eventsUrl at subscription time: absolute http(s)
// with a host, no user info, and every address the host resolves to
// allowed. The same check runs again on every connection.
func (p *Policy) ValidateURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("must be an http or https URL")
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("has no host")
	}
	if u.User != nil {
		return errors.New("must not carry user information")
	}
	if u.Fragment != "" {
		return errors.New("must not have a fragment")
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		return p.Check(a)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("host %s does not resolve: %v", host, err)
	}
	for _, a := range addrs {
		if err := p.Check(a); err != nil {
			return err
		}
	}
	return nil
}

// ClientOptions bound one delivery attempt.
type ClientOptions struct {
	Policy *Policy
	// Timeout bounds a whole attempt (connect, send, answer); default 10 s.
	Timeout time.Duration
	// MaxResponseBody is how much of an answer is read (the rest is
	// dropped and the connection closed); default 64 KiB.
	MaxResponseBody int64
	// UserAgent is sent with every request; default "ocfcloud-webhooks".
	UserAgent string
}

// Client posts webhook deliveries.
type Client struct {
	hc   *http.Client
	opts ClientOptions
}

// NewClient returns a client that dials only addresses the policy allows,
// never follows redirects and bounds time and response size.
func NewClient(o ClientOptions) *Client {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxResponseBody <= 0 {
		o.MaxResponseBody = 64 << 10
	}
	if o.UserAgent == "" {
		o.UserAgent = "ocfcloud-webhooks"
	}
	if o.Policy == nil {
		o.Policy, _ = NewPolicy(nil, nil, false)
	}
	pol := o.Policy
	dialer := &net.Dialer{
		Timeout:   5 * time.Second,
		KeepAlive: 30 * time.Second,
		// Control runs for the address actually dialled, after DNS: a name
		// that resolved to an allowed address at subscription time and to a
		// denied one now is still refused.
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrDenied, address)
			}
			return pol.Check(ap.Addr())
		},
	}
	tr := &http.Transport{
		Proxy:                  nil, // a proxy would hide the real destination from the policy
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  o.Timeout,
		MaxResponseHeaderBytes: 16 << 10,
	}
	return &Client{opts: o, hc: &http.Client{
		Transport: tr,
		Timeout:   o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

// Post sends one attempt and returns the answer's status code. A redirect
// is returned as its 3xx status, which the caller treats as a failure.
func (c *Client) Post(ctx context.Context, rawURL string, header http.Header, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.opts.UserAgent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, c.opts.MaxResponseBody))
	if n == c.opts.MaxResponseBody {
		// Too large to drain: closing without reading drops the connection.
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// CloseIdle closes idle connections.
func (c *Client) CloseIdle() { c.hc.CloseIdleConnections() }
