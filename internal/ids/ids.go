// Package ids is the one place that makes and checks the UUIDs ocfcloud uses
// as device ids (di), user ids (uid), the cloud id (sid) and record ids.
package ids

import "github.com/google/uuid"

// New returns a random (version 4) UUID in the canonical lower-case form.
func New() string { return uuid.NewString() }

// IsUUID reports whether s is a UUID in the canonical 8-4-4-4-12 hex form,
// the pattern the OCF specifications give for di and uid. Unlike
// uuid.Parse it accepts no braces, no urn: prefix and no other lengths.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
