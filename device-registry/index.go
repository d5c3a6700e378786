package registry

import (
	"slices"
	"sort"
	"strings"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/registryapi"
)

// device is the in-memory state of one device.
type device struct {
	doc    deviceDoc
	online onlineValue
	twin   map[string]*twinValue
}

// index holds every device in memory; the registry guards it with a lock.
type index struct {
	devices map[string]*device
}

func newIndex() *index { return &index{devices: map[string]*device{}} }

func (d *device) view() registryapi.Device {
	v := registryapi.Device{
		DeviceID:     d.doc.ID,
		Owner:        d.doc.Owner,
		Online:       d.online.Online,
		RegisteredAt: d.doc.RegisteredAt,
		Links:        slices.Clone(d.doc.Links),
	}
	if d.online.Online {
		v.OnlineSince = d.online.Since
	}
	if v.Links == nil {
		v.Links = []ocf.Link{}
	}
	for _, l := range d.doc.Links {
		if l.Href == ocf.PathDevice {
			v.Types = slices.Clone(l.RT)
		}
	}
	if t := d.twin[ocf.PathDevice]; t != nil {
		var info ocf.DeviceInfo
		if ocf.Unmarshal(t.Content, &info) == nil {
			v.Name = info.Name
			if len(info.RT) > 0 {
				v.Types = info.RT
			}
		}
	}
	return v
}

func (d *device) visibleTo(c registryapi.Caller) bool {
	return c.Admin || (c.UserID != "" && c.UserID == d.doc.Owner)
}

// list returns the caller's devices ordered by device id, which keeps pages
// stable while devices come and go.
func (ix *index) list(c registryapi.Caller) []*device {
	out := make([]*device, 0, len(ix.devices))
	for _, d := range ix.devices {
		if d.visibleTo(c) {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.Compare(out[i].doc.ID, out[j].doc.ID) < 0 })
	return out
}

// mergeLinks replaces links with the same href and appends new ones.
func mergeLinks(have, add []ocf.Link) []ocf.Link {
	out := slices.Clone(have)
	for _, l := range add {
		i := slices.IndexFunc(out, func(o ocf.Link) bool { return o.Href == l.Href })
		if i >= 0 {
			out[i] = l
		} else {
			out = append(out, l)
		}
	}
	return out
}

func removeLinks(have []ocf.Link, hrefs []string) []ocf.Link {
	return slices.DeleteFunc(slices.Clone(have), func(l ocf.Link) bool { return slices.Contains(hrefs, l.Href) })
}
