package c2capi

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of the representation cache. An entry costs its CBOR key, its JSON
// and about reprEntryOverhead bytes of map slot, entry and header strings,
// so the cache holds at most reprCacheBytes (8 MiB) plus one entry.
const (
	reprCacheBytes    = 8 << 20
	reprMaxContent    = 16 << 10 // larger representations are converted every time
	reprEntryOverhead = 256
)

// reprCache keeps the JSON of OCF CBOR representations, keyed by the CBOR
// bytes themselves. Converting CBOR to JSON (decode into maps, encode again)
// was most of the garbage of a twin read, and the same representations come
// back again and again: a twin is read many times between changes, and
// devices of one kind answer with the same few contents. Keyed by content,
// an entry can never be stale: the conversion is a function of the bytes.
// It keeps no device state (see the package doc): a twin's headers are
// only reused while the registry reports the same sequence and time.
type reprCache struct {
	mu    sync.RWMutex
	m     map[string]*reprEntry
	bytes int
}

type reprEntry struct {
	json []byte
	// twin is the ETag and Last-Modified header values last formatted for
	// a twin with this content; they are used only for the same sequence
	// and time.
	twin atomic.Pointer[twinHeaders]
}

type twinHeaders struct {
	seq          uint64
	at           time.Time
	etag         string
	etagValue    []string // {etag}, for the header map
	lastModified []string
}

// headers returns the twin headers of (seq, at), formatting them when the
// entry holds another twin's.
func (e *reprEntry) headers(seq uint64, at time.Time) *twinHeaders {
	if h := e.twin.Load(); h != nil && h.seq == seq && h.at.Equal(at) {
		return h
	}
	h := newTwinHeaders(seq, at)
	e.twin.Store(h)
	return h
}

func newTwinHeaders(seq uint64, at time.Time) *twinHeaders {
	etag := `"` + strconv.FormatUint(seq, 36) + `"`
	// Cap 1: an Add by anyone appends to a copy, never to these shared slices.
	return &twinHeaders{seq: seq, at: at, etag: etag, etagValue: []string{etag},
		lastModified: []string{at.UTC().Format(http.TimeFormat)}}
}

// get returns the entry of the CBOR content, converting it with conv and
// keeping the result on a miss (unless the content is large).
func (c *reprCache) get(content []byte, conv func([]byte) ([]byte, error)) (*reprEntry, error) {
	c.mu.RLock()
	e := c.m[string(content)] // no copy: the compiler looks up without allocating
	c.mu.RUnlock()
	if e != nil {
		return e, nil
	}
	j, err := conv(content)
	if err != nil {
		return nil, err
	}
	e = &reprEntry{json: j}
	if len(content) > reprMaxContent {
		return e, nil
	}
	size := len(content) + len(j) + reprEntryOverhead
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[string(content)]; old != nil {
		return old, nil // another request converted it meanwhile
	}
	if c.m == nil {
		c.m = make(map[string]*reprEntry)
	}
	// Full: forget arbitrary entries (map order is random) until a quarter
	// is free. A forgotten representation is only converted again.
	if c.bytes+size > reprCacheBytes {
		for k, old := range c.m {
			if c.bytes+size <= reprCacheBytes*3/4 {
				break
			}
			c.bytes -= len(k) + len(old.json) + reprEntryOverhead
			delete(c.m, k)
		}
	}
	c.m[string(content)] = e
	c.bytes += size
	return e, nil
}
