package ocf

// SignUpRequest is the body of POST /oic/sec/account.
type SignUpRequest struct {
	DeviceID     string `cbor:"di" json:"di"`
	AuthProvider string `cbor:"authprovider,omitempty" json:"authprovider,omitempty"`
	AccessToken  string `cbor:"accesstoken" json:"accesstoken"`
	DeviceType   string `cbor:"devicetype,omitempty" json:"devicetype,omitempty"`
}

// SignUpResponse answers a sign-up. ExpiresIn is seconds, -1 for never.
type SignUpResponse struct {
	AccessToken  string `cbor:"accesstoken" json:"accesstoken"`
	RefreshToken string `cbor:"refreshtoken" json:"refreshtoken"`
	UserID       string `cbor:"uid" json:"uid"`
	ExpiresIn    int64  `cbor:"expiresin" json:"expiresin"`
	RedirectURI  string `cbor:"redirecturi" json:"redirecturi"`
}

// SessionRequest is the body of POST /oic/sec/session (sign-in / sign-out).
type SessionRequest struct {
	DeviceID    string `cbor:"di" json:"di"`
	UserID      string `cbor:"uid" json:"uid"`
	AccessToken string `cbor:"accesstoken" json:"accesstoken"`
	Login       bool   `cbor:"login" json:"login"`
}

// SessionResponse answers a sign-in with the remaining token lifetime.
type SessionResponse struct {
	ExpiresIn int64 `cbor:"expiresin" json:"expiresin"`
}

// TokenRefreshRequest is the body of POST /oic/sec/tokenrefresh.
type TokenRefreshRequest struct {
	DeviceID     string `cbor:"di" json:"di"`
	UserID       string `cbor:"uid" json:"uid"`
	RefreshToken string `cbor:"refreshtoken" json:"refreshtoken"`
}

// TokenRefreshResponse answers a token refresh.
type TokenRefreshResponse struct {
	AccessToken  string `cbor:"accesstoken" json:"accesstoken"`
	RefreshToken string `cbor:"refreshtoken" json:"refreshtoken"`
	ExpiresIn    int64  `cbor:"expiresin" json:"expiresin"`
}

// PublishRequest is the body of POST /oic/rd.
type PublishRequest struct {
	DeviceID string `cbor:"di" json:"di"`
	Links    []Link `cbor:"links" json:"links"`
	TTL      int64  `cbor:"ttl,omitempty" json:"ttl,omitempty"`
}

// Link is an OCF resource link (oic.oic-link).
type Link struct {
	Anchor     string     `cbor:"anchor,omitempty" json:"anchor,omitempty"`
	Href       string     `cbor:"href" json:"href"`
	DeviceID   string     `cbor:"di,omitempty" json:"di,omitempty"`
	RT         []string   `cbor:"rt,omitempty" json:"rt,omitempty"`
	IF         []string   `cbor:"if,omitempty" json:"if,omitempty"`
	Title      string     `cbor:"title,omitempty" json:"title,omitempty"`
	InstanceID int64      `cbor:"ins,omitempty" json:"ins,omitempty"`
	Policy     *Policy    `cbor:"p,omitempty" json:"p,omitempty"`
	Endpoints  []Endpoint `cbor:"eps,omitempty" json:"eps,omitempty"`
}

// Policy carries the link's bitmask: 1 discoverable, 2 observable.
type Policy struct {
	BitMask int `cbor:"bm" json:"bm"`
}

// Endpoint is one entry of a link's eps.
type Endpoint struct {
	EP       string `cbor:"ep" json:"ep"`
	Priority int    `cbor:"pri,omitempty" json:"pri,omitempty"`
}

// Observable reports whether the link's policy marks the resource observable.
func (l Link) Observable() bool { return l.Policy != nil && l.Policy.BitMask&2 != 0 }

// DeviceInfo is the content of /oic/d that the cloud cares about.
type DeviceInfo struct {
	Name         string           `cbor:"n,omitempty" json:"n,omitempty"`
	DeviceID     string           `cbor:"di,omitempty" json:"di,omitempty"`
	RT           []string         `cbor:"rt,omitempty" json:"rt,omitempty"`
	PIID         string           `cbor:"piid,omitempty" json:"piid,omitempty"`
	ModelNumber  string           `cbor:"dmno,omitempty" json:"dmno,omitempty"`
	Manufacturer []LocalizedValue `cbor:"dmn,omitempty" json:"dmn,omitempty"`
}

// LocalizedValue is a string in a language (OCF dmn, ld).
type LocalizedValue struct {
	Language string `cbor:"language" json:"language"`
	Value    string `cbor:"value" json:"value"`
}

// PlatformInfo is the content of /oic/p that the cloud cares about.
type PlatformInfo struct {
	ID               string `cbor:"pi,omitempty" json:"pi,omitempty"`
	ManufacturerName string `cbor:"mnmn,omitempty" json:"mnmn,omitempty"`
}
