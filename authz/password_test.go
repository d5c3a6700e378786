package authz

import (
	"regexp"
	"strings"
	"testing"
)

func TestPasswordHashIsPHCArgon2id(t *testing.T) {
	defer setArgonCost(setArgonCost(argonMemoryKiB, argonTime))
	h, err := hashPassword("s3cret-passw0rd")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q", h)
	}
	if ok, err := checkPassword(h, "s3cret-passw0rd"); !ok || err != nil {
		t.Fatalf("right password: %v %v", ok, err)
	}
	if ok, err := checkPassword(h, "s3cret-passw0rd "); ok || err != nil {
		t.Fatalf("wrong password: %v %v", ok, err)
	}
	for _, bad := range []string{
		"", "plain", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=19456,t=2,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA",
	} {
		if _, err := checkPassword(bad, "x"); err == nil {
			t.Errorf("malformed hash %q accepted", bad)
		}
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func FuzzIsUUID(f *testing.F) {
	f.Add(newUUID())
	f.Add("2b8b1e4a-7c1d-4f3e-9a6b-5d4c3b2a1f0e")
	f.Add("2b8b1e4a7c1d-4f3e-9a6b-5d4c3b2a1f0e-")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := isUUID(s), uuidRE.MatchString(s); got != want {
			t.Fatalf("isUUID(%q) = %v, want %v", s, got, want)
		}
	})
}
