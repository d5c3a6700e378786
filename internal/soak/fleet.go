package soak

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/devicesim"
)

// startFleetProcess runs o.FleetCommand against the cloud at base. Its
// progress goes to out; its log lines (errors only) go to out and are
// counted. done receives the process's end.
func startFleetProcess(ctx context.Context, o Options, base, password string, out io.Writer) (errs *atomicInt, done <-chan error, err error) {
	cmd := devicesim.FleetProcess(ctx, devicesim.FleetProcessArgs{
		Command: o.FleetCommand, Count: o.Devices, APIURL: base, Username: "admin", Password: password,
		ChangeEvery: o.ChangeEvery,
	})
	cmd.Stdout = out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("fleet process: %w", err)
	}
	errs = &atomicInt{}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "level=ERROR") {
				errs.add()
			}
			fmt.Fprintln(out, "fleet:", sc.Text())
		}
	}()
	ch := make(chan error, 1)
	go func() {
		<-scanned // Wait closes the pipe; read it to the end first
		ch <- cmd.Wait()
	}()
	return errs, ch, nil
}

// countOnline asks the C2C API how many devices are online; -1 when it
// cannot tell.
func countOnline(ctx context.Context, base, token string) int {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, total, err := devicesim.OnlineDevices(ctx, http.DefaultClient, base, token, 0)
	if err != nil {
		return -1
	}
	return total
}
