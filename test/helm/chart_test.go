package helm_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

var serviceNames = []string{"authz", "device-registry", "c2c-api", "coap-gateway"}

// pendingServeFlags are flags the chart passes that `ocfcloud serve` is to
// gain (cloud id and certificate files for distributed mode). Once serve.go
// defines them this list is only documentation.
var pendingServeFlags = []string{}

func TestChartLintsWithEveryCIValuesFile(t *testing.T) {
	for _, f := range ciValuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, stderr, err := runHelm(t, "lint", "--strict", chartDir, "-f", f, "--kube-version", kubeVersion)
			if err != nil {
				t.Fatalf("helm lint: %v\n%s%s", err, out, stderr)
			}
		})
	}
}

func TestEveryCIValuesFileRendersValidManifests(t *testing.T) {
	serveFlags := serveFlagNames(t)
	for _, f := range ciValuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			v := values(t, f)
			m := decode(t, mustRender(t, []string{f}))
			checkDeployments(t, v, m, serveFlags)
			checkServices(t, v, m)
			checkIngress(t, v, m)
			checkGatewayScaling(t, v, m)
			checkSecretsExist(t, f, m)
			checkCertificates(t, v, m)
		})
	}
}

func fullname(v map[string]any) string {
	if s := str(v, "fullnameOverride"); s != "" {
		return s
	}
	return release + "-ocfcloud"
}

// args returns a container's flags as name -> value ("serve" excluded).
func args(c corev1.Container) map[string]string {
	out := map[string]string{}
	for _, a := range c.Args {
		if name, val, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok && strings.HasPrefix(a, "--") {
			out[name] = val
		} else if strings.HasPrefix(a, "--") {
			out[strings.TrimPrefix(a, "--")] = ""
		}
	}
	return out
}

func serveFlagNames(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("../../cmd/ocfcloud/serve.go")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`\.\w+Var(?:P)?\(&[^,]+,\s*"([a-z0-9-]+)"`).FindAllSubmatch(src, -1) {
		names = append(names, string(m[1]))
	}
	if len(names) < 5 {
		t.Fatalf("found only %v in serve.go: the flag pattern is out of date", names)
	}
	return names
}

func checkDeployments(t *testing.T, v map[string]any, m *manifests, serveFlags []string) {
	t.Helper()
	fn := fullname(v)
	hubID := str(v, "global.hubId")
	var image string
	if len(m.Deployments) != len(serviceNames) {
		t.Errorf("deployments %v, want one per service %v", sortedKeys(m.Deployments), serviceNames)
	}
	for _, svc := range serviceNames {
		name := fn + "-" + svc
		d, ok := m.Deployments[name]
		if !ok {
			t.Errorf("no Deployment %s", name)
			continue
		}
		if d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("%s: selector %v does not match its pod labels %v (the API server rejects it)", name, d.Spec.Selector, d.Spec.Template.Labels)
		}
		for other, od := range m.Deployments {
			if other != name && selects(d.Spec.Selector.MatchLabels, od.Spec.Template.Labels) {
				t.Errorf("%s's selector also matches %s's pods", name, other)
			}
		}
		pod := d.Spec.Template.Spec
		if len(pod.Containers) != 1 {
			t.Fatalf("%s: %d containers", name, len(pod.Containers))
		}
		c := pod.Containers[0]
		a := args(c)
		if len(c.Args) == 0 || c.Args[0] != "serve" || a["services"] != svc {
			t.Errorf("%s runs %v, want `ocfcloud serve --services=%s`", name, c.Args, svc)
		}
		if image == "" {
			image = c.Image
		} else if c.Image != image {
			t.Errorf("%s runs image %s, others %s: one image for all", name, c.Image, image)
		}
		if a["cloud-id"] != hubID {
			t.Errorf("%s --cloud-id=%q, want global.hubId %q", name, a["cloud-id"], hubID)
		}
		if a["public-url"] != str(v, "publicURL") {
			t.Errorf("%s --public-url=%q, want %q", name, a["public-url"], str(v, "publicURL"))
		}
		if a["nats-url"] != "$(OCFCLOUD_NATS_URL)" || a["mongo-uri"] != "$(OCFCLOUD_MONGO_URI)" {
			t.Errorf("%s: NATS and Mongo must come from the Secret via env: %v", name, c.Args)
		}
		for flag := range a {
			if !slices.Contains(serveFlags, flag) && !slices.Contains(pendingServeFlags, flag) {
				t.Errorf("%s passes --%s, which `ocfcloud serve` does not have", name, flag)
			}
		}
		// Every $(VAR) the kubelet expands must be defined, or it stays literal.
		env := map[string]bool{}
		for _, e := range c.Env {
			env[e.Name] = true
		}
		for _, arg := range c.Args {
			for _, ref := range regexp.MustCompile(`\$\((\w+)\)`).FindAllStringSubmatch(arg, -1) {
				if !env[ref[1]] {
					t.Errorf("%s: %s refers to $(%s), which is not in env", name, arg, ref[1])
				}
			}
		}
		if svc != "authz" {
			authzSvc := m.Services[fn+"-authz"]
			want := "http://" + fn + "-authz." + namespace + ".svc:8080"
			if a["authz-url"] != want || authzSvc == nil || authzSvc.Spec.Ports[0].Port != 8080 {
				t.Errorf("%s --authz-url=%q, want %q served by Service %s-authz", name, a["authz-url"], want, fn)
			}
		}
		// Probes on the HTTP listener.
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
			if len(p.Name) > 15 {
				t.Errorf("%s: port name %q longer than 15", name, p.Name)
			}
		}
		for probeName, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
			want := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[probeName]
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || ports[p.HTTPGet.Port.String()] != 8080 {
				t.Errorf("%s: %s probe %+v, want GET %s on the http port 8080", name, probeName, p, want)
			}
		}
		if ports["http"] != 8080 || a["http-addr"] != ":8080" {
			t.Errorf("%s: http port %d, --http-addr=%q", name, ports["http"], a["http-addr"])
		}
		// Hardened: non-root, read-only root file system, no privileges.
		psc, sc := pod.SecurityContext, c.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("%s: pod is not forced non-root: %+v", name, psc)
		}
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: container security context %+v, want read-only root, no privilege escalation, drop ALL", name, sc)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s mounts a service account token it never uses", name)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: resources %+v, want cpu and memory requests and a memory limit", name, c.Resources)
		}
		// The data dir must be writable despite the read-only root.
		if !mounted(pod, c, a["data-dir"], func(vol corev1.Volume) bool { return vol.EmptyDir != nil }) {
			t.Errorf("%s: --data-dir=%s is not on an emptyDir", name, a["data-dir"])
		}
		// Certificate files passed by flag are mounted from Secrets.
		for _, flag := range []string{"coap-tls-cert", "coap-tls-key", "device-ca", "ca-cert", "tls-cert", "tls-key"} {
			if p, ok := a[flag]; ok && !mounted(pod, c, filepath.Dir(p), func(vol corev1.Volume) bool { return vol.Secret != nil }) {
				t.Errorf("%s: --%s=%s is not in a mounted Secret", name, flag, p)
			}
		}
		if sum := d.Spec.Template.Annotations["checksum/config"]; !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sum) {
			t.Errorf("%s: checksum/config annotation %q", name, sum)
		}
	}

	gw := m.Deployments[fn+"-coap-gateway"]
	if gw == nil {
		return
	}
	a := args(gw.Spec.Template.Spec.Containers[0])
	coaps := boolean(v, "coapGateway.coaps.enabled")
	if coaps != (a["coaps-addr"] == ":5684") || (coaps && (a["coap-tls-cert"] == "" || a["device-ca"] == "")) {
		t.Errorf("gateway coaps flags %v do not follow coapGateway.coaps.enabled=%v", a, coaps)
	}
	if boolean(v, "coapGateway.coap.enabled") != (a["coap-addr"] == ":5683") {
		t.Errorf("gateway --coap-addr=%q does not follow coapGateway.coap.enabled", a["coap-addr"])
	}
	if a["public-host"] != str(v, "coapGateway.publicHost") {
		t.Errorf("gateway --public-host=%q, want %q", a["public-host"], str(v, "coapGateway.publicHost"))
	}
	if az := m.Deployments[fn+"-authz"]; az != nil {
		aa := args(az.Spec.Template.Spec.Containers[0])
		host := a["public-host"]
		wantCIS, wantSecure := "", ""
		if a["coap-addr"] != "-" {
			wantCIS = fmt.Sprintf("coap+tcp://%s:%v", host, v["coapGateway"].(map[string]any)["coap"].(map[string]any)["port"])
		}
		if coaps {
			wantSecure = fmt.Sprintf("coaps+tcp://%s:%v", host, v["coapGateway"].(map[string]any)["coaps"].(map[string]any)["port"])
		}
		if aa["cis"] != wantCIS || aa["cis-secure"] != wantSecure || (coaps && aa["ca-cert"] == "") || aa["coap-addr"] != "-" || aa["coaps-addr"] != "-" {
			t.Errorf("authz onboarding info (--cis=%q --cis-secure=%q --ca-cert=%q) differs from the gateway's %q %q", aa["cis"], aa["cis-secure"], aa["ca-cert"], wantCIS, wantSecure)
		}
	}
	for _, svc := range []string{"device-registry", "c2c-api"} {
		if d := m.Deployments[fn+"-"+svc]; d != nil {
			if aa := args(d.Spec.Template.Spec.Containers[0]); aa["coap-addr"] != "-" || aa["coaps-addr"] != "-" {
				t.Errorf("%s would open CoAP listeners: %v", svc, aa)
			}
		}
	}
}

// mounted reports whether dir is at or under a mount of a volume that ok accepts.
func mounted(pod corev1.PodSpec, c corev1.Container, dir string, ok func(corev1.Volume) bool) bool {
	for _, vm := range c.VolumeMounts {
		if dir == vm.MountPath || strings.HasPrefix(dir, strings.TrimSuffix(vm.MountPath, "/")+"/") {
			for _, vol := range pod.Volumes {
				if vol.Name == vm.Name && ok(vol) {
					return true
				}
			}
		}
	}
	return false
}

func podsOf(m *manifests, selector map[string]string) []*appsv1.Deployment {
	var out []*appsv1.Deployment
	for _, name := range sortedKeys(m.Deployments) {
		if d := m.Deployments[name]; selects(selector, d.Spec.Template.Labels) {
			out = append(out, d)
		}
	}
	return out
}

func checkServices(t *testing.T, v map[string]any, m *manifests) {
	t.Helper()
	for name, s := range m.Services {
		targets := podsOf(m, s.Spec.Selector)
		if len(targets) != 1 {
			t.Errorf("Service %s selects %d Deployments, want 1", name, len(targets))
			continue
		}
		c := targets[0].Spec.Template.Spec.Containers[0]
		for _, p := range s.Spec.Ports {
			found := false
			for _, cp := range c.Ports {
				if (p.TargetPort.String() == cp.Name || p.TargetPort.IntVal == cp.ContainerPort) && p.Protocol == cp.Protocol {
					found = true
				}
			}
			if !found {
				t.Errorf("Service %s port %s targets %s, which %s does not expose", name, p.Name, p.TargetPort.String(), targets[0].Name)
			}
		}
	}
	gw := m.Services[fullname(v)+"-coap-gateway"]
	if gw == nil {
		t.Fatal("no gateway Service")
	}
	if string(gw.Spec.Type) != str(v, "coapGateway.service.type") {
		t.Errorf("gateway Service type %s, want %s", gw.Spec.Type, str(v, "coapGateway.service.type"))
	}
	want := map[string]bool{}
	if boolean(v, "coapGateway.coap.enabled") {
		want["coap"] = true
	}
	if boolean(v, "coapGateway.coaps.enabled") {
		want["coaps"] = true
	}
	for _, p := range gw.Spec.Ports {
		if p.Protocol != corev1.ProtocolTCP {
			t.Errorf("gateway port %s is %s: CoAP over TCP needs TCP", p.Name, p.Protocol)
		}
		if (p.Name == "coap" && p.Port != 5683) || (p.Name == "coaps" && p.Port != 5684) {
			t.Errorf("gateway port %s is %d", p.Name, p.Port)
		}
		delete(want, p.Name)
	}
	if len(want) > 0 {
		t.Errorf("gateway Service lacks ports %v", want)
	}
}

func checkIngress(t *testing.T, v map[string]any, m *manifests) {
	t.Helper()
	fn := fullname(v)
	ing := m.Ingresses[fn]
	if !boolean(v, "ingress.enabled") {
		if ing != nil {
			t.Error("Ingress rendered while disabled")
		}
		return
	}
	if ing == nil || len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].HTTP == nil {
		t.Fatalf("no Ingress rule for %s", str(v, "ingress.host"))
	}
	rule := ing.Spec.Rules[0]
	if rule.Host != str(v, "ingress.host") || !strings.Contains(str(v, "publicURL"), "://"+rule.Host) {
		t.Errorf("Ingress host %q, values host %q, publicURL %q: they must agree (the issuer is the public URL)", rule.Host, str(v, "ingress.host"), str(v, "publicURL"))
	}
	routes := map[string]string{}
	for _, p := range rule.HTTP.Paths {
		b := p.Backend.Service
		if b == nil {
			t.Errorf("path %s has no Service backend", p.Path)
			continue
		}
		s := m.Services[b.Name]
		if s == nil {
			t.Errorf("path %s routes to Service %s, which is not rendered", p.Path, b.Name)
			continue
		}
		if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == b.Port.Number }) {
			t.Errorf("path %s routes to %s port %d, which the Service does not have", p.Path, b.Name, b.Port.Number)
		}
		if p.PathType == nil {
			t.Errorf("path %s has no pathType (required by networking.k8s.io/v1)", p.Path)
		}
		routes[p.Path] = strings.TrimPrefix(b.Name, fn+"-")
	}
	for path, svc := range map[string]string{"/": "authz", "/api/v1/devices": "c2c-api", "/api/v1/help": "c2c-api"} {
		if routes[path] != svc {
			t.Errorf("Ingress routes %s to %q, want %s", path, routes[path], svc)
		}
	}
	if boolean(v, "ingress.tls.enabled") && (len(ing.Spec.TLS) != 1 || !slices.Contains(ing.Spec.TLS[0].Hosts, rule.Host) || ing.Spec.TLS[0].SecretName == "") {
		t.Errorf("Ingress TLS %+v does not cover %s", ing.Spec.TLS, rule.Host)
	}
}

func checkGatewayScaling(t *testing.T, v map[string]any, m *manifests) {
	t.Helper()
	fn := fullname(v)
	gw := m.Deployments[fn+"-coap-gateway"]
	hpa := m.HPAs[fn+"-coap-gateway"]
	if boolean(v, "coapGateway.autoscaling.enabled") {
		if hpa == nil {
			t.Fatal("autoscaling enabled but no HorizontalPodAutoscaler")
		}
		ref := hpa.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != gw.Name {
			t.Errorf("HPA scales %+v, want the gateway Deployment", ref)
		}
		if gw.Spec.Replicas != nil {
			t.Error("the gateway Deployment sets replicas while an HPA scales it: every upgrade would reset the scale")
		}
		if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 1 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
			t.Errorf("HPA bounds %v..%d", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
		}
		if len(hpa.Spec.Metrics) == 0 || hpa.Spec.Metrics[0].Resource == nil || hpa.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU {
			t.Errorf("HPA metrics %+v, want CPU", hpa.Spec.Metrics)
		}
	} else {
		if hpa != nil {
			t.Error("HPA rendered while autoscaling is disabled")
		}
		if gw.Spec.Replicas == nil {
			t.Error("gateway has no replica count and no HPA")
		}
	}
	pdb := m.PDBs[fn+"-coap-gateway"]
	if boolean(v, "coapGateway.podDisruptionBudget.enabled") {
		if pdb == nil {
			t.Fatal("no PodDisruptionBudget for the gateway")
		}
		if got := podsOf(m, pdb.Spec.Selector.MatchLabels); len(got) != 1 || got[0] != gw {
			t.Errorf("PDB selects %d Deployments, want only the gateway", len(got))
		}
		if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
			t.Error("PDB sets neither maxUnavailable nor minAvailable")
		}
	}
}

// checkSecretsExist: every Secret a pod uses is rendered by the chart, made
// by cert-manager, or named in the values file as an existing Secret.
func checkSecretsExist(t *testing.T, valuesFile string, m *manifests) {
	t.Helper()
	raw, _ := os.ReadFile(valuesFile)
	known := func(name string) bool {
		if _, ok := m.Secrets[name]; ok {
			return true
		}
		for _, c := range m.Certificates {
			if c.Spec.SecretName == name {
				return true
			}
		}
		return regexp.MustCompile(`(?m)^\s*(existingSecret|secretName):\s*` + regexp.QuoteMeta(name) + `\s*$`).Match(raw)
	}
	for name, d := range m.Deployments {
		pod := d.Spec.Template.Spec
		for _, vol := range pod.Volumes {
			if vol.Secret != nil && !known(vol.Secret.SecretName) {
				t.Errorf("%s mounts Secret %s, which nothing creates", name, vol.Secret.SecretName)
			}
		}
		for _, e := range pod.Containers[0].Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				if !known(ref.Name) {
					t.Errorf("%s env %s reads Secret %s, which nothing creates", name, e.Name, ref.Name)
				} else if s, ok := m.Secrets[ref.Name]; ok {
					if _, has := s.Data[ref.Key]; !has {
						t.Errorf("%s env %s reads key %s, which Secret %s lacks", name, e.Name, ref.Key, ref.Name)
					}
				}
			}
		}
		for _, ips := range pod.ImagePullSecrets {
			if !strings.Contains(string(raw), ips.Name) {
				t.Errorf("%s pulls with %s, not from values", name, ips.Name)
			}
		}
	}
	for _, s := range m.Secrets {
		for k, val := range s.Data {
			if len(val) == 0 {
				t.Errorf("Secret %s key %s is empty", s.Name, k)
			}
		}
	}
}

func checkCertificates(t *testing.T, v map[string]any, m *manifests) {
	t.Helper()
	if !boolean(v, "certManager.enabled") {
		if len(m.Certificates) > 0 {
			t.Error("Certificates rendered without cert-manager")
		}
		return
	}
	for name, c := range m.Certificates {
		for _, u := range c.Spec.Usages {
			if !slices.Contains(certManagerUsages, u) {
				t.Errorf("Certificate %s: usage %q is not a cert-manager key usage", name, u)
			}
		}
		if c.Spec.IssuerRef.Name == "" {
			t.Errorf("Certificate %s has no issuer", name)
		}
	}
	gw := m.Certificates[fullname(v)+"-coap-gateway"]
	if gw == nil {
		t.Fatal("no gateway Certificate")
	}
	if gw.Spec.CommonName != "uuid:"+str(v, "global.hubId") {
		t.Errorf("gateway certificate CN %q, want uuid:<hubId>", gw.Spec.CommonName)
	}
	pk := gw.Spec.PrivateKey
	if pk == nil || pk.Algorithm != "ECDSA" || pk.Size != 256 {
		t.Errorf("gateway key %+v, want ECDSA P-256 (OCF devices support no other)", pk)
	}
	for _, u := range []string{"digital signature", "key agreement", "server auth", "client auth"} {
		if !slices.Contains(gw.Spec.Usages, u) {
			t.Errorf("gateway certificate lacks usage %q of the OCF profile", u)
		}
	}
	if !slices.Contains(append(gw.Spec.DNSNames, gw.Spec.IPAddresses...), str(v, "coapGateway.publicHost")) {
		t.Errorf("gateway certificate does not name the public host %s", str(v, "coapGateway.publicHost"))
	}
	dep := m.Deployments[fullname(v)+"-coap-gateway"]
	if !slices.ContainsFunc(dep.Spec.Template.Spec.Volumes, func(vol corev1.Volume) bool {
		return vol.Secret != nil && vol.Secret.SecretName == gw.Spec.SecretName
	}) {
		t.Errorf("the gateway does not mount the cert-manager Secret %s", gw.Spec.SecretName)
	}
}
