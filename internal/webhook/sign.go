package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// OCF C2C delivery headers.
const (
	HeaderEventType      = "Event-Type"
	HeaderSubscriptionID = "Subscription-ID"
	HeaderSequenceNumber = "Sequence-Number"
	HeaderCorrelationID  = "Correlation-ID"
	HeaderEventTimestamp = "Event-Timestamp"
	HeaderEventSignature = "Event-Signature"
)

// Standard Webhooks headers (https://www.standardwebhooks.com).
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// SecretLength is the length of an OCF signingSecret.
const SecretLength = 32

// EventSignature is the OCF C2C Event-Signature: the lower-case hex
// HMAC-SHA256, keyed with the subscription's signingSecret, of
// contentType:eventType:subscriptionID:sequence:unixSeconds:body. This is the
// form plgd's C2C gateway and client verify.
func EventSignature(secret, contentType, eventType, subscriptionID string, seq uint64, unixSeconds int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(contentType + ":" + eventType + ":" + subscriptionID + ":" + strconv.FormatUint(seq, 10) + ":" + strconv.FormatInt(unixSeconds, 10) + ":"))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// StandardSignature is a Standard Webhooks signature: "v1," followed by the
// base64 HMAC-SHA256, keyed with key, of id.timestamp.body.
func StandardSignature(key []byte, id string, unixSeconds int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + strconv.FormatInt(unixSeconds, 10) + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// StandardSecret is the secret a Standard Webhooks verifier library is
// configured with for an OCF signingSecret: "whsec_" + base64(secret). The
// signing key is the secret's bytes.
func StandardSecret(signingSecret string) string {
	return "whsec_" + base64.StdEncoding.EncodeToString([]byte(signingSecret))
}

// Delivery is what a signed request carries besides its body.
type Delivery struct {
	ContentType    string
	EventType      string
	SubscriptionID string
	Sequence       uint64
	CorrelationID  string
	// EventTime is when the event happened (Event-Timestamp); it is part of
	// the OCF signature, so that signature is the same on every attempt.
	EventTime time.Time
	// WebhookID is the Standard Webhooks message id; it stays the same on
	// every attempt, so receivers deduplicate on it.
	WebhookID string
}

// Sign sets the OCF and the Standard Webhooks headers of one attempt sent
// at now. The Standard Webhooks timestamp is the attempt's time, because
// verifiers reject timestamps older than a few minutes and retries go on
// for hours.
func Sign(h http.Header, secret string, d Delivery, body []byte, now time.Time) {
	ts := d.EventTime.Unix()
	h.Set("Content-Type", d.ContentType)
	h.Set(HeaderEventType, d.EventType)
	h.Set(HeaderSubscriptionID, d.SubscriptionID)
	h.Set(HeaderSequenceNumber, strconv.FormatUint(d.Sequence, 10))
	if d.CorrelationID != "" {
		h.Set(HeaderCorrelationID, d.CorrelationID)
	}
	h.Set(HeaderEventTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderEventSignature, EventSignature(secret, d.ContentType, d.EventType, d.SubscriptionID, d.Sequence, ts, body))
	attempt := now.Unix()
	h.Set(HeaderWebhookID, d.WebhookID)
	h.Set(HeaderWebhookTimestamp, strconv.FormatInt(attempt, 10))
	h.Set(HeaderWebhookSignature, StandardSignature([]byte(secret), d.WebhookID, attempt, body))
}

// Verification errors.
var (
	ErrMissingHeader = errors.New("webhook: missing header")
	ErrBadSignature  = errors.New("webhook: signature mismatch")
	ErrTooOld        = errors.New("webhook: timestamp outside the tolerance")
)

// VerifyOCF checks the OCF Event-Signature of a request.
func VerifyOCF(h http.Header, secret string, body []byte) (Delivery, error) {
	var d Delivery
	for _, k := range []string{"Content-Type", HeaderEventType, HeaderSubscriptionID, HeaderSequenceNumber, HeaderEventTimestamp, HeaderEventSignature} {
		if h.Get(k) == "" {
			return d, fmt.Errorf("%w %s", ErrMissingHeader, k)
		}
	}
	seq, err := strconv.ParseUint(h.Get(HeaderSequenceNumber), 10, 64)
	if err != nil {
		return d, fmt.Errorf("webhook: %s: %w", HeaderSequenceNumber, err)
	}
	ts, err := strconv.ParseInt(h.Get(HeaderEventTimestamp), 10, 64)
	if err != nil {
		return d, fmt.Errorf("webhook: %s: %w", HeaderEventTimestamp, err)
	}
	d = Delivery{ContentType: h.Get("Content-Type"), EventType: h.Get(HeaderEventType), SubscriptionID: h.Get(HeaderSubscriptionID),
		Sequence: seq, CorrelationID: h.Get(HeaderCorrelationID), EventTime: time.Unix(ts, 0), WebhookID: h.Get(HeaderWebhookID)}
	want := EventSignature(secret, d.ContentType, d.EventType, d.SubscriptionID, seq, ts, body)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(h.Get(HeaderEventSignature)))) {
		return d, fmt.Errorf("%w: %s", ErrBadSignature, HeaderEventSignature)
	}
	return d, nil
}

// VerifyStandard checks the Standard Webhooks headers of a request the way
// the Standard Webhooks libraries do: whsecSecret is "whsec_" + base64(key),
// the timestamp must be within tolerance of now, and any one of the
// space-separated v1 signatures must match.
func VerifyStandard(h http.Header, whsecSecret string, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(whsecSecret, "whsec_"))
	if err != nil {
		return fmt.Errorf("webhook: secret: %w", err)
	}
	id, tsRaw, sigs := h.Get(HeaderWebhookID), h.Get(HeaderWebhookTimestamp), h.Get(HeaderWebhookSignature)
	if id == "" || tsRaw == "" || sigs == "" {
		return fmt.Errorf("%w webhook-id, webhook-timestamp or webhook-signature", ErrMissingHeader)
	}
	ts, err := strconv.ParseInt(tsRaw, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook: %s: %w", HeaderWebhookTimestamp, err)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrTooOld
	}
	want := StandardSignature(key, id, ts, body)
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrBadSignature, HeaderWebhookSignature)
}
