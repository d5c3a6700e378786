package authz

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ocfcloud/ocfcloud/internal/auth"
	"github.com/ocfcloud/ocfcloud/internal/events"
)

// followUnregisteredDevices ends the tokens of devices that are signed off
// or offboarded: their refresh tokens are deleted and their access tokens
// issued until then are revoked everywhere, so a forgotten device cannot
// sign in again with what it holds; it needs a new onboarding code.
//
// It listens to the device_unregistered events as they are published (one
// authz replica handles each). An event that arrives while no authz runs is
// missed; the device's access token then lives until it expires, and the
// registry keeps the device forgotten meanwhile.
func (s *Server) followUnregisteredDevices() error {
	if s.cfg.NATS == nil {
		return nil
	}
	subject := events.Subject("*", "*", events.DeviceUnregistered)
	sub, err := s.cfg.NATS.QueueSubscribe(subject, "authz-devices", func(m *nats.Msg) {
		e, err := events.Decode(m.Data)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.forgetDevice(ctx, e.DeviceID, e.Time); err != nil {
			s.log.Error("end the tokens of an unregistered device", "device_id", e.DeviceID, "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	s.subs = append(s.subs, sub)
	return nil
}

// forgetDevice deletes the device's refresh tokens and revokes its access
// tokens issued at or before the time it was unregistered.
func (s *Server) forgetDevice(ctx context.Context, deviceID string, at time.Time) error {
	if err := s.refresh.removeDevice(ctx, deviceID); err != nil {
		return err
	}
	return s.publishRevocation(ctx, auth.Revocation{DeviceID: deviceID, IssuedBefore: at, ExpiresAt: s.now().Add(s.maxAccessTTL())})
}
