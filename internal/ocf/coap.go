package ocf

import "github.com/plgd-dev/go-coap/v3/message"

// ContentFormatCBOR is application/vnd.ocf+cbor, the content format and Accept
// value that OCF devices send.
const ContentFormatCBOR message.MediaType = 10000

// OCF CoAP options (OCF Core 12.2.5). Devices send both with value 0x0800
// (OCF 1.0.0); unknown critical options would otherwise be answered 4.02.
const (
	OptionAcceptVersion  message.OptionID = 2049
	OptionContentVersion message.OptionID = 2053
	// Version1 is the OCF 1.0.0 version value carried by the options above.
	Version1 uint32 = 0x0800
)

// init makes go-coap accept the OCF version options. go-coap's option table
// is a package map read by every codec: it may only be written here, before
// any connection exists (a write while gateways decode is a data race).
func init() {
	def := message.OptionDef{ValueFormat: message.ValueUint, MinLen: 0, MaxLen: 2}
	message.CoapOptionDefs[OptionAcceptVersion] = def
	message.CoapOptionDefs[OptionContentVersion] = def
}

// Well-known OCF paths served by the cloud.
const (
	PathAccount      = "/oic/sec/account"
	PathSession      = "/oic/sec/session"
	PathTokenRefresh = "/oic/sec/tokenrefresh"
	PathRD           = "/oic/rd"
	PathRes          = "/oic/res"
	PathDevice       = "/oic/d"
	PathPlatform     = "/oic/p"
)

// Uint16Bytes encodes v as a big-endian two-byte CoAP option value.
func Uint16Bytes(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }
