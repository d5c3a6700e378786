package devicesim

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// stallProxy forwards TCP between the device and the fake cloud. stall makes
// every link open at that moment silently swallow what the cloud sends, so
// the device's pings go unanswered while the socket stays up, as on a dead
// mobile link. Links opened later work normally.
type stallProxy struct {
	addr string

	mu    sync.Mutex
	links []*atomic.Bool
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var open sync.Map
	t.Cleanup(func() {
		_ = l.Close()
		open.Range(func(k, _ any) bool { _ = k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			dev, err := l.Accept()
			if err != nil {
				return
			}
			cloud, err := net.Dial("tcp", target)
			if err != nil {
				_ = dev.Close()
				continue
			}
			open.Store(dev, true)
			open.Store(cloud, true)
			stalled := new(atomic.Bool)
			p.mu.Lock()
			p.links = append(p.links, stalled)
			p.mu.Unlock()
			wg.Add(2)
			go func() { // device → cloud
				defer wg.Done()
				_, _ = io.Copy(cloud, dev)
				_ = cloud.Close()
			}()
			go func() { // cloud → device, dropped while stalled
				defer wg.Done()
				buf := make([]byte, 4096)
				for {
					n, err := cloud.Read(buf)
					if n > 0 && !stalled.Load() {
						if _, werr := dev.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				_ = dev.Close()
			}()
		}
	}()
	return p
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.links {
		s.Store(true)
	}
}
