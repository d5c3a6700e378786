package platform

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrDataDirUnusable is what CheckDataDir's errors match with errors.Is:
// the data dir cannot hold the embedded stores, so nothing should start.
var ErrDataDirUnusable = errors.New("data dir unusable")

// ErrTooLittleFreeSpace marks the DataDirError of a file system with less
// free space than asked for (it also matches syscall.ENOSPC).
var ErrTooLittleFreeSpace = errors.New("too little free space")

// DataDirError says which data dir cannot be used and why. Err is the
// underlying system error when there is one (EROFS, EACCES, ENOSPC, ...).
type DataDirError struct {
	Dir    string
	Reason string
	Err    error
}

func (e *DataDirError) Error() string {
	return fmt.Sprintf("data dir %s is unusable: %s", e.Dir, e.Reason)
}

// Unwrap lets callers match both ErrDataDirUnusable and the system error.
func (e *DataDirError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrDataDirUnusable}
	}
	return []error{ErrDataDirUnusable, e.Err}
}

// DefaultMinFreeDisk is the free space CheckDataDir asks for by default:
// room for the JetStream file store to create its first blocks and for
// SQLite to grow its write-ahead log, so the cloud does not start only to
// fail on its first writes.
const DefaultMinFreeDisk = 64 << 20

// probeSize is written and synced by the probe: enough to need a real data
// block, so a full file system fails here rather than on the first event.
const probeSize = 4096

// CheckDataDir makes sure dir can hold the cloud's state before anything is
// started: it exists or can be created, is a directory, takes a file that is
// created, written, synced and removed again, and (when minFree > 0) has at
// least minFree bytes available to this user. On failure it returns a
// *DataDirError and leaves no trace: directories it created are removed and
// the probe file is gone.
func CheckDataDir(dir string, minFree uint64) (err error) {
	abs, aerr := filepath.Abs(dir)
	if aerr != nil {
		abs = dir
	}
	var created []string
	defer func() {
		if err != nil {
			removeCreated(created)
		}
	}()
	fail := func(reason string, cause error) error {
		return &DataDirError{Dir: abs, Reason: reason, Err: cause}
	}
	fi, serr := os.Stat(abs)
	switch {
	case serr == nil && !fi.IsDir():
		return fail(fmt.Sprintf("not a directory (it is a %s)", kindOf(fi.Mode())), syscall.ENOTDIR)
	case errors.Is(serr, syscall.ENOTDIR):
		return fail("not a directory (a path above it is a file)", serr)
	case serr != nil && !errors.Is(serr, fs.ErrNotExist):
		return fail(reasonOf(serr, "cannot look at it"), serr)
	case serr != nil:
		if created, err = mkdirAll(abs); err != nil {
			return fail(reasonOf(err, "cannot create it"), err)
		}
	}
	if err = probe(abs); err != nil {
		return fail(reasonOf(err, "cannot write a file in it"), err)
	}
	if minFree > 0 {
		if free, ok := freeBytes(abs); ok && free < minFree {
			return fail(fmt.Sprintf("only %s free of the required %s", mib(free), mib(minFree)),
				fmt.Errorf("%w: %w", ErrTooLittleFreeSpace, syscall.ENOSPC))
		}
	}
	return nil
}

// mkdirAll is os.MkdirAll that reports which directories it created, top
// first, so a failed check can remove exactly those.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		missing = append([]string{d}, missing...)
		if filepath.Dir(d) == d {
			break
		}
	}
	var created []string
	for _, d := range missing {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return created, err
		}
		created = append(created, d)
	}
	return created, nil
}

func removeCreated(created []string) {
	for i := len(created) - 1; i >= 0; i-- {
		_ = os.Remove(created[i]) // only empty directories go
	}
}

// probe creates, writes, syncs and removes a file in dir. Sync matters: on
// file systems with delayed allocation a full disk shows up only there.
func probe(dir string) error {
	f, err := os.CreateTemp(dir, ".ocfcloud-probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, werr := f.Write(make([]byte, probeSize))
	if werr == nil {
		werr = f.Sync()
	}
	cerr := f.Close()
	rerr := os.Remove(name)
	return errors.Join(werr, cerr, rerr)
}

// reasonOf turns a system error into the short reason an operator reads:
// "read-only file system", "permission denied", "no space left on device",
// "not a directory" come straight from the errno.
func reasonOf(err error, doing string) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Sprintf("%s (%s)", errno.Error(), doing)
	}
	return fmt.Sprintf("%s: %v", doing, err)
}

func kindOf(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "non-directory"
}

func mib(n uint64) string {
	if n < 1<<20 && n > 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// ParseByteSize reads a size such as "64MiB", "1GiB", "500MB", "4096" or
// "0". Units are case-insensitive; KiB/MiB/GiB/TiB are powers of 1024,
// KB/MB/GB/TB powers of 1000, and a bare number is bytes.
func ParseByteSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]uint64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}[unit]
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || mult == 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)
	}
	if n > 0 && mult > ^uint64(0)/n {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}
