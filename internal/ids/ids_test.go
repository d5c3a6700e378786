package ids

import (
	"regexp"
	"testing"
)

var uuidRE = regexp.MustCompile(`^[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}$`)

func TestNewMakesCanonicalVersion4UUIDs(t *testing.T) {
	a, b := New(), New()
	if a == b || !IsUUID(a) || a[14] != '4' {
		t.Fatalf("New: %q %q", a, b)
	}
	for _, bad := range []string{"", "{" + a + "}", "urn:uuid:" + a, a[:35], a + "0", "9cfbeb8e_5a1e-4d1c-9d01-00c04fd430c8", "9cfbeb8e-5a1e-4d1c-9d01-00c04fd430cg"} {
		if IsUUID(bad) {
			t.Errorf("IsUUID(%q) = true", bad)
		}
	}
}

func FuzzIsUUID(f *testing.F) {
	f.Add("9cfbeb8e-5a1e-4d1c-9d01-00c04fd430c8")
	f.Add("not-a-uuid")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := IsUUID(s), uuidRE.MatchString(s); got != want {
			t.Fatalf("IsUUID(%q) = %v, want %v", s, got, want)
		}
	})
}
