package manifesttest

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/enclavekit/enclavekit/parent/supervisor"
)

const dir = ".."

// kustomization is the part of kustomize's file the manifests use.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

type manifests struct {
	namespaces   []corev1.Namespace
	configMaps   []corev1.ConfigMap
	services     []corev1.Service
	statefulSets []appsv1.StatefulSet
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// decodeStrict decodes one YAML document as the API server does, only
// stricter: duplicate keys, unknown fields and fields in the wrong case
// are errors.
func decodeStrict(doc []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(j, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strictErrs) > 0 {
		return errors.Join(strictErrs...)
	}
	return nil
}

// load decodes every document of every file kustomization.yaml lists,
// strictly, into its API type.
func load(t *testing.T) (*kustomization, *manifests) {
	t.Helper()
	var k kustomization
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	var listed []string
	for _, f := range files {
		if filepath.Base(f) != "kustomization.yaml" {
			listed = append(listed, filepath.Base(f))
		}
	}
	slices.Sort(listed)
	want := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(listed, want) {
		t.Fatalf("kustomization.yaml resources %v, but the directory has %v", want, listed)
	}
	m := &manifests{}
	for _, name := range k.Resources {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSep.Split(string(b), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s document %d: %v", name, i, err)
			}
			var target any
			switch meta.APIVersion + "/" + meta.Kind {
			case "v1/Namespace":
				m.namespaces = append(m.namespaces, corev1.Namespace{})
				target = &m.namespaces[len(m.namespaces)-1]
			case "v1/ConfigMap":
				m.configMaps = append(m.configMaps, corev1.ConfigMap{})
				target = &m.configMaps[len(m.configMaps)-1]
			case "v1/Service":
				m.services = append(m.services, corev1.Service{})
				target = &m.services[len(m.services)-1]
			case "apps/v1/StatefulSet":
				m.statefulSets = append(m.statefulSets, appsv1.StatefulSet{})
				target = &m.statefulSets[len(m.statefulSets)-1]
			default:
				t.Fatalf("%s document %d: unexpected %s %s", name, i, meta.APIVersion, meta.Kind)
			}
			if err := decodeStrict([]byte(doc), target); err != nil {
				t.Fatalf("%s document %d (%s): %v", name, i, meta.Kind, err)
			}
		}
	}
	return &k, m
}

func TestManifestsDecodeStrictly(t *testing.T) {
	_, m := load(t)
	if len(m.statefulSets) != 1 || len(m.configMaps) != 1 || len(m.services) != 1 || len(m.namespaces) != 1 {
		t.Fatalf("want one StatefulSet, ConfigMap, Service and Namespace; got %d %d %d %d",
			len(m.statefulSets), len(m.configMaps), len(m.services), len(m.namespaces))
	}
}

// TestStrictDecodingRefusesUnknownFields shows the check has teeth.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: apps/v1\nkind: StatefulSet\nspec:\n  replica: 2\n",
		"apiVersion: v1\nkind: Service\nspec:\n  ports: [{port: 443, targetport: 8443}]\n",
		"apiVersion: apps/v1\nkind: StatefulSet\nspec:\n  replicas: 2\n  replicas: 3\n",
	} {
		var target any = &appsv1.StatefulSet{}
		if strings.Contains(doc, "Service") {
			target = &corev1.Service{}
		}
		if err := decodeStrict([]byte(doc), target); err == nil {
			t.Errorf("accepted an unknown field:\n%s", doc)
		}
	}
}

func TestPodRequirements(t *testing.T) {
	_, m := load(t)
	ss := m.statefulSets[0]
	pod := ss.Spec.Template.Spec
	if got := pod.NodeSelector["aws-nitro-enclaves-k8s-dp"]; got != "enabled" {
		t.Errorf("nodeSelector aws-nitro-enclaves-k8s-dp = %q, want enabled (the device plugin's node label)", got)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	eifBytes, err := strconv.ParseInt(ss.Annotations["enclavekit.dev/eif-bytes"], 10, 64)
	if err != nil || eifBytes <= 0 {
		t.Fatalf("annotation enclavekit.dev/eif-bytes %q: want the EIF's size in bytes", ss.Annotations["enclavekit.dev/eif-bytes"])
	}
	hp := c.Resources.Requests[corev1.ResourceName("hugepages-2Mi")]
	for _, tc := range []struct {
		res  corev1.ResourceName
		want string
	}{
		{"aws.ec2.nitro/nitro_enclaves", "1"},
	} {
		r, l := c.Resources.Requests[tc.res], c.Resources.Limits[tc.res]
		if r.Cmp(resource.MustParse(tc.want)) != 0 || l.Cmp(r) != 0 {
			t.Errorf("%s: request %s, limit %s; want %s for both", tc.res, r.String(), l.String(), tc.want)
		}
	}
	if l := c.Resources.Limits["hugepages-2Mi"]; hp.IsZero() || l.Cmp(hp) != 0 {
		t.Errorf("hugepages-2Mi: request %s, limit %s; want equal and set", hp.String(), l.String())
	}
	if hp.Value() < 4*eifBytes {
		t.Errorf("hugepages-2Mi %s is less than four times the EIF (%d bytes); nitro-cli will refuse to start it", hp.String(), eifBytes)
	}
	if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
		t.Error("no memory request: Kubernetes requires one beside hugepages")
	}
	mounted := false
	for _, v := range pod.Volumes {
		if v.EmptyDir != nil && v.EmptyDir.Medium == corev1.StorageMediumHugePages {
			for _, vm := range c.VolumeMounts {
				mounted = mounted || vm.Name == v.Name
			}
		}
	}
	if !mounted {
		t.Error("no HugePages emptyDir mounted in the container")
	}

	// The run.yaml of the ConfigMap is valid for the supervisor itself,
	// and asks for no more than the pod gets.
	cfg := runConfig(t, m, 0)
	var memMiB int64
	for _, e := range cfg.Enclaves {
		memMiB += int64(e.MemoryMiB)
		if e.Debug {
			t.Errorf("enclave %s: debug mode in a shipped manifest", e.Name)
		}
		if int64(e.MemoryMiB)<<20 < 4*eifBytes {
			t.Errorf("enclave %s: memory_mib %d is less than four times the EIF", e.Name, e.MemoryMiB)
		}
	}
	if hp.Value() < memMiB<<20 {
		t.Errorf("hugepages-2Mi %s < the enclaves' memory_mib total %d Mi", hp.String(), memMiB)
	}

	// Probes on the supervisor's endpoints, on its http port.
	httpPort := portOf(t, cfg.HTTP)
	named := map[string]int32{}
	for _, p := range c.Ports {
		named[p.Name] = p.ContainerPort
	}
	for _, tc := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"liveness", c.LivenessProbe, "/healthz"},
		{"readiness", c.ReadinessProbe, "/readyz"},
	} {
		if tc.probe == nil || tc.probe.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET of %s", tc.name, tc.path)
			continue
		}
		g := tc.probe.HTTPGet
		port := g.Port.IntVal
		if g.Port.StrVal != "" {
			port = named[g.Port.StrVal]
		}
		if g.Path != tc.path || int(port) != httpPort {
			t.Errorf("%s probe: GET %s on port %d; want %s on %d (run.yaml http)", tc.name, g.Path, port, tc.path, httpPort)
		}
	}
	for _, e := range cfg.Enclaves {
		for _, in := range e.Ingress {
			p := portOf(t, in.Listen)
			found := false
			for _, cp := range c.Ports {
				found = found || int(cp.ContainerPort) == p
			}
			if !found {
				t.Errorf("ingress %s of enclave %s is not a container port", in.Listen, e.Name)
			}
		}
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds < int64(cfg.DrainTimeout.Seconds())+10 {
		t.Errorf("terminationGracePeriodSeconds must leave drain_timeout (%v) plus time to terminate the enclave", cfg.DrainTimeout)
	}
}

// TestDistinctVsockPortsPerPod: each pod's --slot is its StatefulSet
// index, and the slots of all replicas give disjoint CIDs and parent vsock
// ports.
func TestDistinctVsockPortsPerPod(t *testing.T) {
	_, m := load(t)
	ss := m.statefulSets[0]
	c := ss.Spec.Template.Spec.Containers[0]
	cmd := strings.Join(c.Command, " ")
	if !strings.Contains(cmd, "--slot $(POD_INDEX)") {
		t.Fatalf("command %q does not pass --slot $(POD_INDEX)", cmd)
	}
	var fromIndex bool
	for _, e := range c.Env {
		fromIndex = fromIndex || e.Name == "POD_INDEX" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
			e.ValueFrom.FieldRef.FieldPath == "metadata.labels['apps.kubernetes.io/pod-index']"
	}
	if !fromIndex {
		t.Fatal("POD_INDEX does not come from the pod-index label")
	}
	replicas := int32(1)
	if ss.Spec.Replicas != nil {
		replicas = *ss.Spec.Replicas
	}
	if replicas > supervisor.MaxSlot+1 {
		t.Fatalf("%d replicas, but only %d slots exist", replicas, supervisor.MaxSlot+1)
	}
	cids := map[uint32]int{}
	ports := map[string]int{}
	for slot := range int(replicas) {
		cfg := runConfig(t, m, slot)
		for _, a := range cfg.Assignments() {
			if other, dup := cids[a.CID]; dup {
				t.Errorf("slot %d and %d share CID %d", other, slot, a.CID)
			}
			cids[a.CID] = slot
			addrs := []string{a.LogSink}
			addrs = append(addrs, cfg.EgressListens()...)
			for _, l := range addrs {
				if !strings.HasPrefix(l, "vsock://") {
					continue
				}
				if other, dup := ports[l]; dup && other != slot {
					t.Errorf("slot %d and %d share parent vsock address %s", other, slot, l)
				}
				ports[l] = slot
			}
		}
	}
}

func runConfig(t *testing.T, m *manifests, slot int) *supervisor.Config {
	t.Helper()
	data, ok := m.configMaps[0].Data["run.yaml"]
	if !ok {
		t.Fatal("ConfigMap has no run.yaml")
	}
	path := filepath.Join(t.TempDir(), "run.yaml")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := supervisor.LoadConfigWith(path, supervisor.LoadOptions{Slot: &slot})
	if err != nil {
		t.Fatalf("configmap.yaml run.yaml (slot %d): %v", slot, err)
	}
	return cfg
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	p, err := strconv.Atoi(addr[i+1:])
	if err != nil {
		t.Fatalf("address %q has no port", addr)
	}
	return p
}
