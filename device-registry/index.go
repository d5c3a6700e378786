package registry

import (
	"slices"
	"sort"
	"strings"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
	"github.com/ocfcloud/ocfcloud/internal/odata"
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
			v.Manufacturer = info.Manufacturer
		}
	}
	if t := d.twin[ocf.PathPlatform]; t != nil && len(v.Manufacturer) == 0 {
		var p ocf.PlatformInfo
		if ocf.Unmarshal(t.Content, &p) == nil && p.ManufacturerName != "" {
			v.Manufacturer = []ocf.LocalizedValue{{Language: "en", Value: p.ManufacturerName}}
		}
	}
	return v
}

func (d *device) visibleTo(c registryapi.Caller) bool {
	return !d.gone() && (c.Admin || (c.UserID != "" && c.UserID == d.doc.Owner))
}

// gone reports whether the device was unregistered (a tombstone).
func (d *device) gone() bool { return d.doc.UnregisteredSeq > 0 }

// withContent adds the twin content of every published resource to v.
func (d *device) withContent(v *registryapi.Device) {
	for _, l := range d.doc.Links {
		if t := d.twin[l.Href]; t != nil {
			v.Resources = append(v.Resources, registryapi.Resource{
				DeviceID: d.doc.ID, Href: l.Href, Sequence: t.Sequence, Time: t.Time,
				Status: t.Status, ContentType: t.ContentType, Content: t.Content,
			})
		}
	}
}

// record exposes a device view to OData expressions.
type record struct{ v *registryapi.Device }

func (r record) Field(name string) (odata.Value, bool) {
	switch name {
	case "di":
		return r.v.DeviceID, true
	case "name":
		return r.v.Name, true
	case "types":
		return r.v.Types, true
	case "online":
		return r.v.Online, true
	case "owner":
		return r.v.Owner, true
	}
	return nil, false
}

// list returns views of the caller's devices that match filter, sorted by
// order and then by device id, which keeps pages stable while devices come
// and go.
func (ix *index) list(c registryapi.Caller, filter odata.Expr, order []odata.OrderBy) ([]registryapi.Device, error) {
	out := make([]registryapi.Device, 0, len(ix.devices))
	for _, d := range ix.devices {
		if !d.visibleTo(c) {
			continue
		}
		v := d.view()
		ok, err := odata.Match(filter, record{&v})
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := record{&out[i]}, record{&out[j]}
		for _, o := range order {
			av, _ := a.Field(o.Field)
			bv, _ := b.Field(o.Field)
			cmp, _ := odata.Compare(sortable(av), sortable(bv))
			if cmp != 0 {
				return (cmp < 0) != o.Desc
			}
		}
		return strings.Compare(out[i].DeviceID, out[j].DeviceID) < 0
	})
	return out, nil
}

// sortable turns a collection into its first element so it can be ordered.
func sortable(v odata.Value) odata.Value {
	if l, ok := v.([]string); ok {
		if len(l) == 0 {
			return ""
		}
		return l[0]
	}
	return v
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
