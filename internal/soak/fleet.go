package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"
)

// startFleetProcess runs o.FleetCommand against the cloud at base. Its
// progress goes to out; its log lines (errors only) go to out and are
// counted. done receives the process's end.
func startFleetProcess(ctx context.Context, o Options, base, password string, out io.Writer) (errs *atomicInt, done <-chan error, err error) {
	args := append(o.FleetCommand[1:len(o.FleetCommand):len(o.FleetCommand)],
		"--count", fmt.Sprint(o.Devices), "--api-url", base, "--username", "admin",
		"--change-every", o.ChangeEvery.String(), "--log-level", "error")
	cmd := exec.CommandContext(ctx, o.FleetCommand[0], args...)
	cmd.Env = append(os.Environ(), "OCFCLOUD_PASSWORD="+password)
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
	u := base + "/api/v1/devices?$count=true&$top=0&$filter=" + url.QueryEscape("online eq true")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return -1
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var page struct {
		TotalCount int `json:"TotalCount"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&page) != nil {
		return -1
	}
	return page.TotalCount
}
