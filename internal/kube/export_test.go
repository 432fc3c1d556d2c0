package kube_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/keel-run/keel/internal/config"
	"github.com/keel-run/keel/internal/kube"
	"github.com/keel-run/keel/internal/spec"
)

var update = flag.Bool("update", false, "rewrite the golden manifests in examples/kubernetes")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// manifests are one export, decoded strictly into k8s.io/api's types.
type manifests struct {
	configMaps  []corev1.ConfigMap
	deployments []appsv1.Deployment
	services    []corev1.Service
}

// decode splits a YAML stream and decodes each document strictly (an
// unknown or misplaced field fails) into the official type of its kind.
func decode(t *testing.T, out []byte) manifests {
	t.Helper()
	var m manifests
	for i, doc := range strings.Split(string(out), "\n---\n") {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(doc), &head), "document %d", i)
		switch head.APIVersion + " " + head.Kind {
		case "v1 ConfigMap":
			var o corev1.ConfigMap
			require.NoError(t, yaml.UnmarshalStrict([]byte(doc), &o), "document %d", i)
			m.configMaps = append(m.configMaps, o)
		case "apps/v1 Deployment":
			var o appsv1.Deployment
			require.NoError(t, yaml.UnmarshalStrict([]byte(doc), &o), "document %d", i)
			m.deployments = append(m.deployments, o)
		case "v1 Service":
			var o corev1.Service
			require.NoError(t, yaml.UnmarshalStrict([]byte(doc), &o), "document %d", i)
			m.services = append(m.services, o)
		default:
			t.Fatalf("document %d: unexpected %s %s", i, head.APIVersion, head.Kind)
		}
	}
	return m
}

// writeConfig writes a keel.yaml with a script beside it and loads it.
func writeConfig(t *testing.T, text string) (string, []*spec.App) {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "server.js"), []byte("// app\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "worker.py"), []byte("# app\n"), 0o644))
	p := filepath.Join(dir, "keel.yaml")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
	apps, err := config.Load(p)
	require.NoError(t, err)
	return p, apps
}

// healthPort is the port keel run's --health is given in c's args.
func healthPort(t *testing.T, c corev1.Container) int {
	t.Helper()
	i := slices.Index(c.Args, "--health")
	require.GreaterOrEqual(t, i, 0, "args %q have no --health", c.Args)
	require.Less(t, i+1, len(c.Args))
	host, port, ok := strings.Cut(c.Args[i+1], ":")
	require.True(t, ok)
	require.Empty(t, host, "--health must listen on the pod's every address for the kubelet")
	n, err := strconv.Atoi(port)
	require.NoError(t, err)
	return n
}

// checkProbes holds a container's probes to keel run's --health: each
// probe asks its endpoint on the port --health listens on.
func checkProbes(t *testing.T, c corev1.Container) {
	t.Helper()
	port := healthPort(t, c)
	named := map[string]int32{}
	for _, p := range c.Ports {
		if p.Name != "" {
			named[p.Name] = p.ContainerPort
		}
	}
	for path, pr := range map[string]*corev1.Probe{"/livez": c.LivenessProbe, "/readyz": c.ReadinessProbe, "/startupz": c.StartupProbe} {
		require.NotNil(t, pr, path)
		require.NotNil(t, pr.HTTPGet, path)
		require.Equal(t, path, pr.HTTPGet.Path)
		target := pr.HTTPGet.Port.IntVal
		if pr.HTTPGet.Port.StrVal != "" {
			target = named[pr.HTTPGet.Port.StrVal]
		}
		require.EqualValues(t, port, target, "%s probes port %s, --health is on %d", path, pr.HTTPGet.Port.String(), port)
		require.Positive(t, pr.FailureThreshold)
		require.Positive(t, pr.PeriodSeconds)
	}
	require.Nil(t, c.Lifecycle, "no preStop: keel run drains on SIGTERM itself")
}

const twoApps = `apps:
  - name: web
    script: server.js
    instances: 3
    listen: ["127.0.0.1:3000", ":3001", "unix:///tmp/web.sock"]
    kill_timeout: 20s
    ready_timeout: 40s
    max_memory: 300M
    cron_restart: "0 3 * * *"
    env: {NODE_ENV: production}
  - name: Worker_1
    script: worker.py
    kill_timeout: 2500ms
    watch: [worker.py]
`

func TestExportOnePod(t *testing.T) {
	path, apps := writeConfig(t, twoApps)
	out, notes, err := kube.Export(kube.Options{Apps: apps, ConfigPath: path, Name: "shop", Namespace: "prod", Image: "reg/shop:1"})
	require.NoError(t, err)
	m := decode(t, out)
	require.Len(t, m.configMaps, 1)
	require.Len(t, m.deployments, 1)
	require.Len(t, m.services, 2, "a Service per TCP port; none for the unix socket")

	d := m.deployments[0]
	require.Equal(t, "shop", d.Name)
	require.Equal(t, "prod", d.Namespace)
	require.EqualValues(t, 1, *d.Spec.Replicas, "instances stay processes in the pod")
	require.Equal(t, d.Spec.Selector.MatchLabels, map[string]string{"app.kubernetes.io/name": "shop"})
	for k, v := range d.Spec.Selector.MatchLabels {
		require.Equal(t, v, d.Spec.Template.Labels[k], "the selector must match the pod template")
	}
	ps := d.Spec.Template.Spec
	// The largest kill_timeout (20s) plus the margin.
	require.EqualValues(t, 20+int64(kube.GraceMargin.Seconds()), *ps.TerminationGracePeriodSeconds)
	require.Len(t, ps.Containers, 1)
	c := ps.Containers[0]
	require.Equal(t, "reg/shop:1", c.Image)
	require.Equal(t, []string{"run", "/etc/keel/keel.yaml", "--health", ":9616", "--log-format", "json", "--log-files=false"}, c.Args)
	checkProbes(t, c)
	// The startup probe allows the slowest ready_timeout.
	require.GreaterOrEqual(t, c.StartupProbe.FailureThreshold*c.StartupProbe.PeriodSeconds, int32(40))
	// A memory limit needs every app's max_memory; Worker_1 has none.
	require.Nil(t, c.Resources.Limits)
	require.Contains(t, strings.Join(notes, "\n"), "app Worker_1: no max_memory")
	require.Contains(t, strings.Join(notes, "\n"), "unix:///tmp/web.sock is a unix socket")
	require.Contains(t, strings.Join(notes, "\n"), "127.0.0.1:3000 became :3000")
	require.NotContains(t, strings.Join(notes, "\n"), "cron_restart", "cron_restart works inside one pod")
	require.Contains(t, strings.Join(notes, "\n"), "app web: env (NODE_ENV) goes into the ConfigMap", "env names, never values")
	require.NotContains(t, strings.Join(notes, "\n"), "production")

	var ports []int32
	for _, s := range m.services {
		require.Equal(t, d.Spec.Selector.MatchLabels, s.Spec.Selector)
		require.Len(t, s.Spec.Ports, 1)
		ports = append(ports, s.Spec.Ports[0].Port)
		require.Equal(t, s.Spec.Ports[0].Port, s.Spec.Ports[0].TargetPort.IntVal)
		require.True(t, slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == s.Spec.Ports[0].Port }))
	}
	require.Equal(t, []int32{3000, 3001}, ports)
	require.Equal(t, []string{"web-3000", "web-3001"}, []string{m.services[0].Name, m.services[1].Name})

	// The ConfigMap is a keel config that loads, once its paths point at
	// the files again, with the same apps.
	cm := m.configMaps[0]
	require.Equal(t, "shop-config", cm.Name)
	require.Equal(t, ps.Volumes[0].ConfigMap.Name, cm.Name)
	text := cm.Data["keel.yaml"]
	require.Equal(t, d.Spec.Template.Annotations["keel.run/config-sha256"] != "", true)
	dir := filepath.Dir(path)
	local := filepath.Join(t.TempDir(), "keel.yaml")
	require.NoError(t, os.WriteFile(local, []byte(strings.ReplaceAll(text, "/app", dir)), 0o644))
	back, err := config.Load(local)
	require.NoError(t, err, "the exported config:\n%s", text)
	require.Len(t, back, 2)
	for i, a := range apps {
		want := a.Clone()
		want.ShellEnv = nil
		got := back[len(back)-1-i] // exported sorted by name: Worker_1, web
		if want.Name == "web" {
			want.Listen = []string{":3000", ":3001", "unix:///tmp/web.sock"}
		}
		require.Equal(t, want, got)
	}

	again, _, err := kube.Export(kube.Options{Apps: apps, ConfigPath: path, Name: "shop", Namespace: "prod", Image: "reg/shop:1"})
	require.NoError(t, err)
	require.Equal(t, string(out), string(again), "the output is deterministic")
}

func TestExportReplicas(t *testing.T) {
	path, apps := writeConfig(t, twoApps)
	out, notes, err := kube.Export(kube.Options{Apps: apps, ConfigPath: path, Name: "shop", Replicas: true, HealthPort: 8081})
	require.NoError(t, err)
	m := decode(t, out)
	require.Len(t, m.configMaps, 1)
	require.Len(t, m.deployments, 2, "one Deployment per app")
	byName := map[string]appsv1.Deployment{}
	for _, d := range m.deployments {
		byName[d.Name] = d
		checkProbes(t, d.Spec.Template.Spec.Containers[0])
		require.Equal(t, 8081, healthPort(t, d.Spec.Template.Spec.Containers[0]))
		for k, v := range d.Spec.Selector.MatchLabels {
			require.Equal(t, v, d.Spec.Template.Labels[k])
		}
	}
	web, worker := byName["shop-web"], byName["shop-worker-1"]
	require.EqualValues(t, 3, *web.Spec.Replicas, "instances became replicas")
	require.EqualValues(t, 1, *worker.Spec.Replicas)
	require.EqualValues(t, 25, *web.Spec.Template.Spec.TerminationGracePeriodSeconds)
	require.EqualValues(t, 8, *worker.Spec.Template.Spec.TerminationGracePeriodSeconds, "2.5s rounds up to 3, plus the margin")
	wc := web.Spec.Template.Spec.Containers[0]
	require.Equal(t, []string{"--only", "web"}, wc.Args[len(wc.Args)-2:])
	// One instance of 300M per pod, plus keel, its keeper and log tails.
	require.Equal(t, "348Mi", wc.Resources.Limits.Memory().String())
	require.Equal(t, wc.Resources.Limits.Memory().String(), wc.Resources.Requests.Memory().String())

	for _, s := range m.services {
		require.Equal(t, web.Spec.Selector.MatchLabels, s.Spec.Selector, "web's Services select web's pods only")
	}
	require.NotEqual(t, web.Spec.Selector.MatchLabels, worker.Spec.Selector.MatchLabels)
	all := strings.Join(notes, "\n")
	for _, want := range []string{"app web: cron_restart", "app Worker_1: watch", "app web: instances 3 became 3 pod replicas", "unix socket"} {
		require.Contains(t, all, want)
	}
	require.NotContains(t, m.configMaps[0].Data["keel.yaml"], "instances:", "each pod runs one instance, the default")
}

func TestExportRefuses(t *testing.T) {
	path, apps := writeConfig(t, "apps:\n  - name: a\n    script: server.js\n    listen: [\":9616\"]\n")
	_, _, err := kube.Export(kube.Options{Apps: apps, ConfigPath: path})
	require.ErrorContains(t, err, "the health port")
	_, _, err = kube.Export(kube.Options{Apps: apps, ConfigPath: path, Name: "Not_A_Name", HealthPort: 1234})
	require.ErrorContains(t, err, `--name "Not_A_Name" is not a Kubernetes name`)
	path, apps = writeConfig(t, "apps:\n  - name: a\n    script: server.js\n    listen: [\":80\"]\n  - name: b\n    script: server.js\n    listen: [\":80\"]\n")
	_, _, err = kube.Export(kube.Options{Apps: apps, ConfigPath: path})
	require.ErrorContains(t, err, "port 80 is also app a's")
}

// TestExampleGolden holds examples/kubernetes/manifests.yaml to what
// `keel export kubernetes examples/node-http/keel.yaml --image
// keel-node-http:latest` prints. go test -run Golden -update rewrites it.
func TestExampleGolden(t *testing.T) {
	cfg := filepath.Join("..", "..", "examples", "node-http", "keel.yaml")
	apps, err := config.Load(cfg)
	require.NoError(t, err)
	out, _, err := kube.Export(kube.Options{Apps: apps, ConfigPath: cfg, Image: "keel-node-http:latest"})
	require.NoError(t, err)
	golden := filepath.Join("..", "..", "examples", "kubernetes", "manifests.yaml")
	header := []byte("# keel export kubernetes examples/node-http/keel.yaml --image keel-node-http:latest\n")
	if *update {
		require.NoError(t, os.WriteFile(golden, append(header, out...), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.Equal(t, string(want), string(append(header, out...)), "regenerate with: go test ./internal/kube -run Golden -update")
	m := decode(t, bytes.TrimPrefix(want, header))
	require.Len(t, m.deployments, 1)
	checkProbes(t, m.deployments[0].Spec.Template.Spec.Containers[0])
	require.Len(t, m.services, 1)
	require.EqualValues(t, 3000, m.services[0].Spec.Ports[0].Port)
}
