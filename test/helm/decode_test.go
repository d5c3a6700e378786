package helm_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// certificate is cert-manager.io/v1 Certificate, limited to the spec fields
// cert-manager defines that a chart may set (cert-manager's Go module is not
// a dependency; these names and shapes follow its v1 API reference).
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName     string   `json:"secretName"`
		CommonName     string   `json:"commonName,omitempty"`
		DNSNames       []string `json:"dnsNames,omitempty"`
		IPAddresses    []string `json:"ipAddresses,omitempty"`
		URIs           []string `json:"uris,omitempty"`
		EmailAddresses []string `json:"emailAddresses,omitempty"`
		Duration       string   `json:"duration,omitempty"`
		RenewBefore    string   `json:"renewBefore,omitempty"`
		IsCA           bool     `json:"isCA,omitempty"`
		Usages         []string `json:"usages,omitempty"`
		PrivateKey     *struct {
			Algorithm      string `json:"algorithm,omitempty"`
			Size           int    `json:"size,omitempty"`
			Encoding       string `json:"encoding,omitempty"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
		} `json:"privateKey,omitempty"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind,omitempty"`
			Group string `json:"group,omitempty"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// certManagerUsages are cert-manager's KeyUsage enum values.
var certManagerUsages = []string{"signing", "digital signature", "content commitment", "key encipherment",
	"key agreement", "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
	"server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
	"ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"}

// manifests is one render, decoded.
type manifests struct {
	Deployments  map[string]*appsv1.Deployment
	Services     map[string]*corev1.Service
	Secrets      map[string]*corev1.Secret
	Accounts     map[string]*corev1.ServiceAccount
	Ingresses    map[string]*networkingv1.Ingress
	HPAs         map[string]*autoscalingv2.HorizontalPodAutoscaler
	PDBs         map[string]*policyv1.PodDisruptionBudget
	Certificates map[string]*certificate
	Raw          map[string]string // "Kind/name" -> document
}

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// decode splits helm's output and decodes every document strictly into the
// Kubernetes type its apiVersion and kind name. An unknown apiVersion/kind,
// an unknown field, a wrong type or a duplicate object is an error.
func decode(t *testing.T, out string) *manifests {
	t.Helper()
	m := &manifests{
		Deployments: map[string]*appsv1.Deployment{}, Services: map[string]*corev1.Service{},
		Secrets: map[string]*corev1.Secret{}, Accounts: map[string]*corev1.ServiceAccount{},
		Ingresses: map[string]*networkingv1.Ingress{}, HPAs: map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		PDBs: map[string]*policyv1.PodDisruptionBudget{}, Certificates: map[string]*certificate{},
		Raw: map[string]string{},
	}
	for _, doc := range splitDocs(out) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		_ = yaml.Unmarshal([]byte(doc), &meta)
		name := meta.Metadata.Name
		var target any
		var put func()
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			o := &appsv1.Deployment{}
			target, put = o, func() { m.Deployments[name] = o }
		case "v1 Service":
			o := &corev1.Service{}
			target, put = o, func() { m.Services[name] = o }
		case "v1 Secret":
			o := &corev1.Secret{}
			target, put = o, func() { m.Secrets[name] = o }
		case "v1 ServiceAccount":
			o := &corev1.ServiceAccount{}
			target, put = o, func() { m.Accounts[name] = o }
		case "networking.k8s.io/v1 Ingress":
			o := &networkingv1.Ingress{}
			target, put = o, func() { m.Ingresses[name] = o }
		case "autoscaling/v2 HorizontalPodAutoscaler":
			o := &autoscalingv2.HorizontalPodAutoscaler{}
			target, put = o, func() { m.HPAs[name] = o }
		case "policy/v1 PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			target, put = o, func() { m.PDBs[name] = o }
		case "cert-manager.io/v1 Certificate":
			o := &certificate{}
			target, put = o, func() { m.Certificates[name] = o }
		default:
			t.Errorf("unexpected object %s %s %q (add a type to decode_test.go)", tm.APIVersion, tm.Kind, name)
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
			t.Errorf("%s %q does not fit the Kubernetes API type: %v", tm.Kind, name, err)
			continue
		}
		key := tm.Kind + "/" + name
		if _, dup := m.Raw[key]; dup {
			t.Errorf("%s rendered twice", key)
		}
		m.Raw[key] = doc
		put()
		checkMeta(t, tm.Kind, meta.Metadata)
	}
	return m
}

func splitDocs(out string) []string {
	var docs []string
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(out, -1) {
		var content []string
		for _, l := range strings.Split(d, "\n") {
			if s := strings.TrimSpace(l); s != "" && !strings.HasPrefix(s, "#") {
				content = append(content, l)
			}
		}
		if len(content) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

// checkMeta applies the API server's name and label rules.
func checkMeta(t *testing.T, kind string, md metav1.ObjectMeta) {
	t.Helper()
	limit := 253
	if kind == "Service" {
		limit = 63 // Service names are DNS labels
	}
	if md.Name == "" || len(md.Name) > limit || !dns1123.MatchString(md.Name) || (kind == "Service" && strings.Contains(md.Name, ".")) {
		t.Errorf("%s name %q is not a valid Kubernetes name", kind, md.Name)
	}
	if md.Namespace != namespace {
		t.Errorf("%s %s in namespace %q, want %q", kind, md.Name, md.Namespace, namespace)
	}
	for k, v := range md.Labels {
		if err := labelOK(k, v); err != nil {
			t.Errorf("%s %s label %s=%s: %v", kind, md.Name, k, v, err)
		}
	}
}

var labelValue = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)

func labelOK(k, v string) error {
	if len(v) > 63 || !labelValue.MatchString(v) {
		return fmt.Errorf("invalid label value")
	}
	name := k
	if i := strings.LastIndex(k, "/"); i >= 0 {
		name = k[i+1:]
		if !dns1123.MatchString(k[:i]) {
			return fmt.Errorf("invalid label prefix")
		}
	}
	if name == "" || len(name) > 63 || !labelValue.MatchString(name) {
		return fmt.Errorf("invalid label name")
	}
	return nil
}

// selects reports whether selector matches labels (matchLabels only, which is
// all the chart uses; matchExpressions would be an error here).
func selects(sel map[string]string, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
