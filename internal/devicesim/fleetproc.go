package devicesim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// FleetProcessArgs describe a fleet in a child process: `ocfcloud
// device-sim --count N`, which onboards its devices through the C2C API
// as Username (the password goes in OCFCLOUD_PASSWORD, not the command line).
type FleetProcessArgs struct {
	// Command is the device-sim command: the executable and its
	// subcommand, e.g. {os.Executable(), "device-sim"}.
	Command     []string
	Count       int
	APIURL      string
	Username    string
	Password    string
	ChangeEvery time.Duration // 0: resources never change on their own
}

// FleetProcess is the fleet's command, not started: the caller wires its
// output and starts it. ctx kills it.
func FleetProcess(ctx context.Context, a FleetProcessArgs) *exec.Cmd {
	args := append(a.Command[1:len(a.Command):len(a.Command)],
		"--count", strconv.Itoa(a.Count), "--api-url", a.APIURL, "--username", a.Username, "--log-level", "error")
	if a.ChangeEvery > 0 {
		args = append(args, "--change-every", a.ChangeEvery.String())
	}
	cmd := exec.CommandContext(ctx, a.Command[0], args...)
	cmd.Env = append(os.Environ(), "OCFCLOUD_PASSWORD="+a.Password)
	return cmd
}

// OnlineDevices asks the C2C API at base which devices are online: the
// total and the ids of the first top of them (top ≤ 100, the page size).
func OnlineDevices(ctx context.Context, c *http.Client, base, token string, top int) (ids []string, total int, err error) {
	u := fmt.Sprintf("%s/api/v1/devices?$count=true&$top=%d&$filter=%s", base, top, url.QueryEscape("online eq true"))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("online devices: %s", resp.Status)
	}
	var page struct {
		Value []struct {
			Device struct {
				DI string `json:"di"`
			} `json:"device"`
		} `json:"value"`
		TotalCount int `json:"TotalCount"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return nil, 0, fmt.Errorf("online devices: %w", err)
	}
	for _, v := range page.Value {
		ids = append(ids, v.Device.DI)
	}
	return ids, page.TotalCount, nil
}
