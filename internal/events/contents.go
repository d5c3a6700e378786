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
