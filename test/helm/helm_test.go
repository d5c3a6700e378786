// Package helm_test renders charts/ocfcloud with the helm binary for every
// ci/*-values.yaml and checks the result the way a cluster would: every
// object is decoded strictly into its Kubernetes API type (an unknown or
// misplaced field fails, as kubeconform -strict would), then the wiring
// between objects is checked (selectors, ports, Secrets, flags).
//
// helm comes from .ci/run (go install helm.sh/helm/v3/cmd/helm@v3.22.0).
// Without it the tests skip locally and fail in CI.
package helm_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	chartDir    = "../../charts/ocfcloud"
	release     = "rel"
	namespace   = "iot"
	kubeVersion = "1.31.0"
)

func helmBin(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if home, err := os.UserHomeDir(); err == nil {
		if p := filepath.Join(home, "go", "bin", "helm"); fileExists(p) {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("helm not found; .ci/run installs it with go install helm.sh/helm/v3/cmd/helm@v3.22.0")
	}
	t.Skip("helm not installed (go install helm.sh/helm/v3/cmd/helm@v3.22.0): chart tests skipped")
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func runHelm(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	// No kube config: rendering must never need a cluster.
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "none"), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// render runs helm template with the given values files and --set pairs.
func render(t *testing.T, chart string, valuesFiles []string, sets ...string) (string, error) {
	t.Helper()
	args := []string{"template", release, chart, "--namespace", namespace, "--kube-version", kubeVersion}
	for _, f := range valuesFiles {
		args = append(args, "-f", f)
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, stderr, err := runHelm(t, args...)
	if err != nil {
		return "", &helmError{stderr: stderr, err: err}
	}
	return out, nil
}

type helmError struct {
	stderr string
	err    error
}

func (e *helmError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }

func mustRender(t *testing.T, valuesFiles []string, sets ...string) string {
	t.Helper()
	out, err := render(t, chartDir, valuesFiles, sets...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return out
}

func ciValuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci/*-values.yaml in %s (%v)", chartDir, err)
	}
	return files
}

// values reads a values file merged over nothing (the test only looks up
// keys the file sets; defaults are checked against values.yaml separately).
func values(t *testing.T, file string) map[string]any {
	t.Helper()
	m := map[string]any{}
	for _, f := range []string{filepath.Join(chartDir, "values.yaml"), file} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := yaml.Unmarshal(data, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		merge(m, v)
	}
	return m
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// lookup walks a dotted path in merged values.
func lookup(m map[string]any, path string) any {
	var cur any = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func str(m map[string]any, path string) string {
	s, _ := lookup(m, path).(string)
	return s
}

func boolean(m map[string]any, path string) bool {
	b, _ := lookup(m, path).(bool)
	return b
}
