package platform

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestDataDirIsCreatedAndLeftClean(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "data")
	if err := CheckDataDir(dir, 1); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("data dir not created: %v", err)
	}
	if len(entries) != 0 {
		t.Fatalf("probe left %v behind", entries)
	}
}

func TestDataDirThatIsAFileIsUnusable(t *testing.T) {
	parent := t.TempDir()
	file := filepath.Join(parent, "data")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{file, filepath.Join(file, "below")} {
		err := CheckDataDir(dir, 0)
		assertUnusable(t, err, dir, "not a directory")
		if !errors.Is(err, syscall.ENOTDIR) {
			t.Errorf("%v does not match ENOTDIR", err)
		}
	}
}

func TestDataDirWithTooLittleFreeSpaceIsUnusableAndNotCreated(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "new", "data")
	free, ok := freeBytes(parent)
	if !ok {
		t.Skip("statfs is not available on this platform")
	}
	err := CheckDataDir(dir, free+1<<30)
	assertUnusable(t, err, dir, "free of the required")
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrTooLittleFreeSpace) {
		t.Errorf("%v does not match ENOSPC and ErrTooLittleFreeSpace", err)
	}
	if _, err := os.Stat(filepath.Join(parent, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed check left the directories it created: %v", err)
	}
	if err := CheckDataDir(dir, 0); err != nil {
		t.Fatalf("0 disables the free-space check: %v", err)
	}
}

func TestDataDirWithoutWritePermissionIsUnusable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes regardless of permission bits; test/e2e covers this by running the binary as another user")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o700)
	assertUnusable(t, CheckDataDir(dir, 0), dir, "permission denied")
}

func assertUnusable(t *testing.T, err error, dir, reason string) {
	t.Helper()
	var de *DataDirError
	if !errors.As(err, &de) || !errors.Is(err, ErrDataDirUnusable) {
		t.Fatalf("CheckDataDir(%s) = %v, want a *DataDirError", dir, err)
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), reason) {
		t.Fatalf("error %q does not name %s and %q", err, dir, reason)
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]uint64{
		"0": 0, "4096": 4096, "64MiB": 64 << 20, "64mib": 64 << 20, "1 GiB": 1 << 30,
		"500MB": 500e6, "2G": 2 << 30, "10KiB": 10 << 10,
	} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5GiB", "12 parsecs", "99999999999TiB"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) accepted", in)
		}
	}
}
