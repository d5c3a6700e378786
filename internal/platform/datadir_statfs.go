//go:build linux || darwin || freebsd

package platform

import "syscall"

// freeBytes is the space available to an unprivileged user in dir's file
// system (f_bavail, not f_bfree: root's reserve does not count).
func freeBytes(dir string) (uint64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return uint64(st.Bavail) * uint64(st.Bsize), true
}
