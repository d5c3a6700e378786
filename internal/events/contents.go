package events

import "github.com/ocfcloud/ocfcloud/internal/ocf"

// ResourcesPublishedContent is the JSON content of a resources_published
// event: the links as the device published them (device-relative hrefs).
type ResourcesPublishedContent struct {
	Links []ocf.Link `json:"links"`
}

// ResourcesUnpublishedContent is the JSON content of a resources_unpublished
// event; the gateway resolves instance ids to hrefs before publishing.
type ResourcesUnpublishedContent struct {
	Hrefs []string `json:"hrefs"`
}

// OnlineContent is the JSON content of a device_online event: the gateway
// instance holding the connection, whose lease keeps the device online.
type OnlineContent struct {
	Gateway string `json:"gateway"`
}

// OfflineContent is the JSON content of a device_offline event.
type OfflineContent struct {
	// Gateway is the instance whose connection ended (or whose lease
	// expired); consumers ignore the event when the device is online through
	// another gateway by now.
	Gateway string `json:"gateway,omitempty"`
	// Reason is "disconnected", "signed_out", "token_expired" or
	// "gateway_lost" (the gateway's lease expired).
	Reason string `json:"reason,omitempty"`
}
