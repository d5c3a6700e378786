package helm_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var defaultCI = []string{filepath.Join(chartDir, "ci", "default-values.yaml")}

func TestSchemaRejectsTypos(t *testing.T) {
	cases := []struct {
		set, mention string
	}{
		{"coapGateway.replica=3", "replica"},
		{"ingres.enabled=false", "ingres"},
		{"mongodb.url=mongodb://x", "url"},
		{"coapGateway.service.type=Loadbalancer", "/coapGateway/service/type"},
		{"global.hubId=not-a-uuid", "hubId"},
		{"publicURL=cloud.example.com", "publicURL"},
		{"logLevel=verbose", "logLevel"},
		{"certManager.issuerRef.kind=Isuer", "kind"},
		{"coapGateway.autoscaling.targetCPUUtilizationPercentage=170", "targetCPUUtilizationPercentage"},
		{"authz.extraArgs[0]=cloud-id=x", "extraArgs"},
	}
	for _, tc := range cases {
		t.Run(tc.set, func(t *testing.T) {
			_, err := render(t, chartDir, defaultCI, tc.set)
			if err == nil {
				t.Fatalf("--set %s was accepted", tc.set)
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error does not point at %q in the schema: %v", tc.mention, err)
			}
		})
	}
	// The same values spelt right are accepted, so the failures above are the typos.
	for _, ok := range []string{"coapGateway.replicaCount=3", "ingress.enabled=false", "mongodb.uri=mongodb://x",
		"coapGateway.service.type=NodePort", "logLevel=debug", "certManager.issuerRef.kind=ClusterIssuer"} {
		if _, err := render(t, chartDir, defaultCI, ok); err != nil {
			t.Errorf("--set %s: %v", ok, err)
		}
	}
}

func TestMissingSettingsFailWithWhatToDo(t *testing.T) {
	base := []string{
		"global.hubId=2b1c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b", "publicURL=https://c.example.com",
		"nats.url=nats://n:4222", "mongodb.uri=mongodb://m", "coapGateway.publicHost=coap.example.com",
		"certificates.gateway.existingSecret=gw-tls",
	}
	without := func(prefix string, extra ...string) []string {
		var out []string
		for _, s := range base {
			if !strings.HasPrefix(s, prefix) {
				out = append(out, s)
			}
		}
		return append(out, extra...)
	}
	if _, err := render(t, chartDir, nil, base...); err != nil {
		t.Fatalf("complete settings: %v", err)
	}
	cases := []struct {
		name    string
		sets    []string
		mention string
	}{
		{"no hub id", without("global.hubId"), "global.hubId is required"},
		{"no public URL", without("publicURL"), "publicURL is required"},
		{"no NATS", without("nats.url"), "nats.url or nats.existingSecret"},
		{"no MongoDB", without("mongodb.uri"), "mongodb.uri or mongodb.existingSecret"},
		{"no gateway host", without("coapGateway.publicHost"), "coapGateway.publicHost is required"},
		{"coaps without certificates", without("certificates.gateway"), "ocfcloud certs gateway"},
		{"cert-manager without issuer", without("certificates.gateway", "certManager.enabled=true"), "certManager.issuerRef.name"},
		{"no listener", append(base, "coapGateway.coap.enabled=false", "coapGateway.coaps.enabled=false"), "devices could not connect"},
		{"HPA bounds", append(base, "coapGateway.autoscaling.minReplicas=5", "coapGateway.autoscaling.maxReplicas=2"), "minReplicas"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, chartDir, nil, tc.sets...)
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("err %v, want one mentioning %q", err, tc.mention)
			}
		})
	}
	// Plain CoAP only needs no certificate.
	if _, err := render(t, chartDir, nil, without("certificates.gateway", "coapGateway.coaps.enabled=false")...); err != nil {
		t.Errorf("coap+tcp only: %v", err)
	}
}

func TestConfigChangeRollsPodsAndNothingElseDoes(t *testing.T) {
	checksums := func(sets ...string) map[string]string {
		t.Helper()
		m := decode(t, mustRender(t, defaultCI, append([]string{"admin.password=fixed"}, sets...)...))
		out := map[string]string{}
		for name, d := range m.Deployments {
			out[name] = d.Spec.Template.Annotations["checksum/config"]
		}
		return out
	}
	base := checksums()
	first := ""
	for name, sum := range base {
		if first == "" {
			first = sum
		} else if sum != first {
			t.Errorf("%s has checksum %s, others %s: one Secret, one checksum", name, sum, first)
		}
	}
	changed := checksums("mongodb.uri=mongodb://other/?replicaSet=rs1")
	for name, sum := range changed {
		if sum == base[name] {
			t.Errorf("%s: a new MongoDB URI did not change the checksum, so pods would keep the old one", name)
		}
	}
	if pw := checksums("admin.password=other"); pw[release+"-ocfcloud-authz"] == base[release+"-ocfcloud-authz"] {
		t.Error("a new admin password did not change the checksum")
	}
	for name, sum := range checksums("coapGateway.replicaCount=5", "logLevel=debug") {
		if sum != base[name] {
			t.Errorf("%s: a change outside the Secret changed the config checksum", name)
		}
	}
}

func TestGeneratedAdminPasswordIsUsableAndConsistent(t *testing.T) {
	m := decode(t, mustRender(t, defaultCI))
	s := m.Secrets[release+"-ocfcloud-config"]
	if s == nil {
		t.Fatal("no config Secret")
	}
	pw := string(s.Data["admin-password"])
	if len(pw) < 16 {
		t.Errorf("generated admin password %q is too short", pw)
	}
	// Two renders without a cluster generate different passwords (helm
	// install keeps the first one through lookup), never a fixed default.
	m2 := decode(t, mustRender(t, defaultCI))
	if string(m2.Secrets[release+"-ocfcloud-config"].Data["admin-password"]) == pw {
		t.Error("the generated password is the same in two installs: a default password")
	}
}

// TestNotesExplainOnboarding renders NOTES.txt with the real template engine
// (helm template skips NOTES, so a copy of the chart carries it inside a
// ConfigMap) and checks that it tells how to get an onboarding code.
func TestNotesExplainOnboarding(t *testing.T) {
	helmBin(t)
	dir := filepath.Join(t.TempDir(), "ocfcloud")
	copyDir(t, chartDir, dir)
	notes, err := os.ReadFile(filepath.Join(chartDir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "files"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "files", "NOTES.txt"), notes, 0o644); err != nil {
		t.Fatal(err)
	}
	wrapper := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ tpl (.Files.Get \"files/NOTES.txt\") . | quote }}\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "zz-notes.yaml"), []byte(wrapper), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range ciValuesFiles(t) {
		if _, err := runNotes(t, dir, f); err != nil {
			t.Errorf("NOTES.txt with %s: %v", filepath.Base(f), err)
		}
	}
	out, err := runNotes(t, dir, filepath.Join(chartDir, "ci", "default-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"POST -H \"Authorization: Bearer $TOKEN\" https://cloud.example.com/api/v1/onboarding-codes",
		"grant_type=password",
		"rel-ocfcloud-config",
		"coaps+tcp://coap.example.com:5684",
		"2b1c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b",
		"kubectl -n iot get svc rel-ocfcloud-coap-gateway",
		"coap.enabled=false",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("NOTES lack %q:\n%s", want, out)
		}
	}
	out, err = runNotes(t, dir, filepath.Join(chartDir, "ci", "existing-secrets-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "get secret ocfcloud-admin") || strings.Contains(out, "coap.enabled=false") {
		t.Errorf("NOTES with an existing admin Secret and CoAP off:\n%s", out)
	}
}

func runNotes(t *testing.T, chart, valuesFile string) (string, error) {
	t.Helper()
	out, _, err := runHelm(t, "template", release, chart, "--namespace", namespace, "-f", valuesFile, "--show-only", "templates/zz-notes.yaml")
	if err != nil {
		return "", err
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict([]byte(out), &cm); err != nil {
		return "", err
	}
	return cm.Data["notes"], nil
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDockerfileBuildsStaticNonRootImage(t *testing.T) {
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	for _, want := range []string{
		"FROM golang:1.26",           // the project's Go
		"CGO_ENABLED=0",              // static binary for distroless/static
		"gcr.io/distroless/static",   // no shell, no libc
		"USER 65532:65532",           // the chart's runAsUser
		"ENTRYPOINT [\"/ocfcloud\"]", // args from the chart start with "serve"
		"-trimpath",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"data", "bin", ".git"} {
		if !strings.Contains(string(ignore), want) {
			t.Errorf(".dockerignore does not exclude %s (dev certificates and keys would enter the build context)", want)
		}
	}
}
