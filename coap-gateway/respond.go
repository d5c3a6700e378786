package coapgateway

import (
	"bytes"
	"log/slog"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// respondCBOR answers with an OCF CBOR body.
func respondCBOR(w *responseWriter, code codes.Code, v any) {
	data, err := ocf.Marshal(v)
	if err != nil {
		respondError(w, codes.InternalServerError, "cannot encode answer")
		return
	}
	if err := w.SetResponse(code, ocf.ContentFormatCBOR, bytes.NewReader(data)); err != nil {
		slog.Debug("set response", "err", err)
	}
}

// respondError answers code with a diagnostic payload (RFC 7252 §5.5.2).
func respondError(w *responseWriter, code codes.Code, diagnostic string) {
	_ = w.SetResponse(code, message.TextPlain, bytes.NewReader([]byte(diagnostic)))
}

// decodeBody decodes a CBOR (or JSON, for tools) request body into v.
func decodeBody(r *pool.Message, v any) error {
	body, err := r.ReadBody()
	if err != nil {
		return err
	}
	if cf, err := r.ContentFormat(); err == nil && cf == message.AppJSON {
		j, err := ocf.JSONToCBOR(body)
		if err != nil {
			return err
		}
		body = j
	}
	return ocf.Unmarshal(body, v)
}

// ocfOptions are the options every request the gateway sends to a device
// carries, as real OCF stacks expect.
func ocfOptions() []message.Option {
	return []message.Option{
		{ID: message.Accept, Value: ocf.Uint16Bytes(uint16(ocf.ContentFormatCBOR))},
		{ID: ocf.OptionAcceptVersion, Value: ocf.Uint16Bytes(uint16(ocf.Version1))},
	}
}
