package kube

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keel-run/keel/internal/sockets"
	"github.com/keel-run/keel/internal/spec"
)

// Defaults of Options.
const (
	DefaultHealthPort = 9616 // beside keel web's 9615
	DefaultWorkDir    = "/app"
	ConfigDir         = "/etc/keel" // where the ConfigMap is mounted
	ConfigName        = "keel.yaml" // its key, and the file keel run reads
	// GraceMargin is added to the largest kill_timeout for the pod's
	// terminationGracePeriodSeconds: keel needs a moment after the last
	// SIGKILL to reap, flush the last log lines and exit on its own.
	GraceMargin = 5 * time.Second
	// keelMemory is what a pod's memory limit adds for keel itself, and
	// keeperMemory per instance for its keeper and its log tails in
	// /dev/shm (keel run --log-files=false: up to 4 MiB a stream), over
	// the apps' max_memory.
	keelMemory        = 32 << 20
	keeperMemory      = 16 << 20
	startupPeriod     = 2 // seconds
	startupMargin     = 10 * time.Second
	healthPortName    = "health"
	managedBy         = "keel"
	appLabel          = "app.kubernetes.io/name"
	componentLabel    = "app.kubernetes.io/component"
	managedByLabel    = "app.kubernetes.io/managed-by"
	configHashAnnotes = "keel.run/config-sha256"
)

// Options say what Export makes.
type Options struct {
	// Apps are the config's apps, as config.Load returns them (absolute
	// paths, defaults filled in).
	Apps []*spec.App
	// ConfigPath is the config file; paths under its directory are mapped
	// into WorkDir, and its directory names the objects when Name is "".
	ConfigPath string
	Image      string // default: Name + ":latest"
	Name       string // default: the only app's name, else the config's directory
	Namespace  string // "" leaves it to kubectl's context
	// Replicas makes one Deployment per app with the app's instances as
	// pod replicas (one process per pod), instead of one Deployment that
	// runs every instance as processes in one pod.
	Replicas   bool
	HealthPort int    // default DefaultHealthPort
	WorkDir    string // where the image holds the config's directory; default DefaultWorkDir
}

// Export returns the manifests as one YAML stream, and notes on what it
// could not translate or changed (one line each, for stderr). It fails if
// an option is not usable as a Kubernetes name.
func Export(o Options) (manifests []byte, notes []string, err error) {
	if len(o.Apps) == 0 {
		return nil, nil, errors.New("exporting to Kubernetes: the config has no apps")
	}
	if o.HealthPort == 0 {
		o.HealthPort = DefaultHealthPort
	}
	if o.HealthPort < 1 || o.HealthPort > 65535 {
		return nil, nil, fmt.Errorf("exporting to Kubernetes: health port %d is not 1 to 65535", o.HealthPort)
	}
	if o.WorkDir == "" {
		o.WorkDir = DefaultWorkDir
	}
	if !path.IsAbs(o.WorkDir) {
		return nil, nil, fmt.Errorf("exporting to Kubernetes: --workdir %q is not an absolute path", o.WorkDir)
	}
	if o.Name == "" {
		if len(o.Apps) == 1 {
			o.Name = dnsLabel(o.Apps[0].Name)
		} else {
			abs, _ := filepath.Abs(o.ConfigPath)
			o.Name = dnsLabel(filepath.Base(filepath.Dir(abs)))
		}
	}
	if !validLabel(o.Name) {
		return nil, nil, fmt.Errorf("exporting to Kubernetes: --name %q is not a Kubernetes name (lower-case letters, digits and '-', starting with a letter, at most 63)", o.Name)
	}
	if o.Namespace != "" && !validLabel(o.Namespace) {
		return nil, nil, fmt.Errorf("exporting to Kubernetes: --namespace %q is not a Kubernetes name", o.Namespace)
	}
	if o.Image == "" {
		o.Image = o.Name + ":latest"
	}
	e := &exporter{o: o}
	return e.run()
}

type exporter struct {
	o     Options
	notes []string
	docs  []any
}

func (e *exporter) note(format string, args ...any) {
	e.notes = append(e.notes, fmt.Sprintf(format, args...))
}

// appPorts is what one app serves: the TCP ports a Service can reach.
type appPorts struct {
	app   *spec.App
	ports []int
}

func (e *exporter) run() ([]byte, []string, error) {
	apps := slices.Clone(e.o.Apps)
	slices.SortStableFunc(apps, func(a, b *spec.App) int { return strings.Compare(a.Name, b.Name) })

	// The config the pods run: paths moved into the image, loopback
	// addresses opened up, and under Replicas one instance per pod.
	var served []appPorts
	var cfgApps []*spec.App
	for _, a := range apps {
		c := a.Clone()
		ap := appPorts{app: c}
		for i, l := range c.Listen {
			addr, err := sockets.Parse(l)
			if err != nil {
				return nil, nil, fmt.Errorf("exporting app %s: %w", a.Name, err)
			}
			switch {
			case addr.Network == sockets.Unix:
				e.note("app %s: listen %s is a unix socket: it is shared only inside the pod, and no Service reaches it", a.Name, l)
				continue
			case addr.Port == 0:
				e.note("app %s: listen %s has no fixed port: no Service can name it", a.Name, l)
				continue
			case addr.Host != "" && addr.Host != "0.0.0.0" && addr.Host != "::":
				c.Listen[i] = ":" + strconv.Itoa(addr.Port)
				e.note("app %s: listen %s became %s: a Service reaches the pod's own address, not %s", a.Name, l, c.Listen[i], addr.Host)
			}
			if !slices.Contains(ap.ports, addr.Port) {
				ap.ports = append(ap.ports, addr.Port)
			}
		}
		if len(c.Listen) == 0 {
			e.note("app %s: no listen address: no Service for it (a port the app opens itself is not known to keel until it runs; name it in listen)", a.Name)
		}
		if e.o.Replicas {
			if len(c.Watch) > 0 {
				e.note("app %s: watch is kept in each pod, but a container's files change only with a new image: roll out instead", a.Name)
			}
			if c.CronRestart != "" {
				e.note("app %s: cron_restart %q restarts every replica at the same moment (keel staggers instances inside one pod only); a CronJob running kubectl rollout restart is the rolling form", a.Name, c.CronRestart)
			}
			if c.Instances > 1 {
				e.note("app %s: instances %d became %d pod replicas of one instance each", a.Name, c.Instances, c.Instances)
			}
		}
		if len(c.Env) > 0 {
			keys := make([]string, 0, len(c.Env))
			for k := range c.Env {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			e.note("app %s: env (%s) goes into the ConfigMap as plain text; keep secrets in a Secret and add it to the container with envFrom (keel run passes its environment to the apps)", a.Name, strings.Join(keys, ", "))
		}
		if c.MaxMemory == 0 {
			e.note("app %s: no max_memory, so the pod gets no memory limit", a.Name)
		}
		served = append(served, ap)
		cfgApps = append(cfgApps, c)
	}
	ports := map[int]string{}
	for _, ap := range served {
		for _, p := range ap.ports {
			if p == e.o.HealthPort {
				return nil, nil, fmt.Errorf("exporting app %s: it listens on %d, the health port; choose another with --health-port", ap.app.Name, p)
			}
			if other, ok := ports[p]; ok && !e.o.Replicas {
				return nil, nil, fmt.Errorf("exporting app %s: port %d is also app %s's, and both would run in one pod", ap.app.Name, p, other)
			}
			ports[p] = ap.app.Name
		}
	}

	cfgText, err := e.configText(cfgApps)
	if err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(cfgText)
	hash := hex.EncodeToString(sum[:])

	e.docs = append(e.docs, configMap{
		APIVersion: "v1", Kind: "ConfigMap",
		Metadata: e.meta(e.o.Name+"-config", e.labels("")),
		Data:     map[string]string{ConfigName: string(cfgText)},
	})
	if e.o.Replicas {
		for _, ap := range served {
			name := e.o.Name + "-" + dnsLabel(ap.app.Name)
			if !validLabel(name) {
				return nil, nil, fmt.Errorf("exporting app %s: %q is too long for a Kubernetes name; choose a shorter --name", ap.app.Name, name)
			}
			e.docs = append(e.docs, e.deployment(name, ap.app.Name, []appPorts{ap}, ap.app.Instances, hash))
			e.services(ap.app.Name, []appPorts{ap})
		}
	} else {
		e.docs = append(e.docs, e.deployment(e.o.Name, "", served, 1, hash))
		e.services("", served)
	}

	var buf bytes.Buffer
	for i, d := range e.docs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(d); err != nil {
			return nil, nil, fmt.Errorf("writing manifests: %w", err)
		}
		if err := enc.Close(); err != nil {
			return nil, nil, fmt.Errorf("writing manifests: %w", err)
		}
	}
	return buf.Bytes(), e.notes, nil
}

// labels are an object's labels; app is "" for what all apps share.
func (e *exporter) labels(app string) map[string]string {
	l := map[string]string{appLabel: e.o.Name, managedByLabel: managedBy}
	if app != "" {
		l[componentLabel] = dnsLabel(app)
	}
	return l
}

// selector picks the pods of one Deployment (app "" the shared one).
func (e *exporter) selector(app string) map[string]string {
	l := map[string]string{appLabel: e.o.Name}
	if app != "" {
		l[componentLabel] = dnsLabel(app)
	}
	return l
}

func (e *exporter) meta(name string, labels map[string]string) meta {
	return meta{Name: name, Namespace: e.o.Namespace, Labels: labels}
}

// deployment runs `keel run` for the apps (app "" means all of them).
func (e *exporter) deployment(name, app string, apps []appPorts, replicas int, hash string) deployment {
	args := []string{"run", path.Join(ConfigDir, ConfigName),
		"--health", ":" + strconv.Itoa(e.o.HealthPort),
		"--log-format", "json", "--log-files=false"}
	if app != "" {
		args = append(args, "--only", app)
	}
	var (
		killTimeout, readyTimeout time.Duration
		memory                    int64
		limited                   = true
		cports                    []port
	)
	for _, ap := range apps {
		a := ap.app
		killTimeout = max(killTimeout, a.KillTimeout.D())
		readyTimeout = max(readyTimeout, a.ReadyTimeout.D())
		n := a.Instances
		if e.o.Replicas {
			n = 1
		}
		if a.MaxMemory == 0 {
			limited = false
		}
		memory += int64(a.MaxMemory)*int64(n) + keeperMemory*int64(n)
		for _, p := range ap.ports {
			cports = append(cports, port{ContainerPort: p, Protocol: "TCP"})
		}
	}
	slices.SortFunc(cports, func(a, b port) int { return a.ContainerPort - b.ContainerPort })
	cports = append(cports, port{Name: healthPortName, ContainerPort: e.o.HealthPort, Protocol: "TCP"})

	c := container{
		Name:       "keel",
		Image:      e.o.Image,
		Args:       args,
		WorkingDir: e.o.WorkDir,
		Ports:      cports,
		// Startup: the slowest app may take its whole ready_timeout.
		StartupProbe: &probe{
			HTTPGet:          httpGet{Path: "/startupz", Port: healthPortName},
			PeriodSeconds:    startupPeriod,
			TimeoutSeconds:   1,
			FailureThreshold: int(ceilSeconds(readyTimeout+startupMargin)+startupPeriod-1) / startupPeriod,
		},
		// Readiness drops at the first 503: keel answers it as soon as an
		// app is short of instances or the shutdown has begun.
		ReadinessProbe: &probe{
			HTTPGet:          httpGet{Path: "/readyz", Port: healthPortName},
			PeriodSeconds:    2,
			TimeoutSeconds:   1,
			FailureThreshold: 1,
		},
		LivenessProbe: &probe{
			HTTPGet:          httpGet{Path: "/livez", Port: healthPortName},
			PeriodSeconds:    10,
			TimeoutSeconds:   2,
			FailureThreshold: 3,
		},
		VolumeMounts: []volumeMount{{Name: "config", MountPath: ConfigDir, ReadOnly: true}},
	}
	if limited {
		q := quantity(memory + keelMemory)
		c.Resources = &resources{
			Requests: map[string]string{"memory": q},
			Limits:   map[string]string{"memory": q},
		}
	}
	tmplMeta := meta{Labels: e.labels(app), Annotations: map[string]string{configHashAnnotes: hash}}
	return deployment{
		APIVersion: "apps/v1", Kind: "Deployment",
		Metadata: e.meta(name, e.labels(app)),
		Spec: deploymentSpec{
			Replicas: replicas,
			Selector: labelSelector{MatchLabels: e.selector(app)},
			// A new pod must be ready before an old one goes, as keel's
			// own reload does for instances.
			Strategy: &strategy{Type: "RollingUpdate", RollingUpdate: &rollingUpdate{MaxUnavailable: 0, MaxSurge: 1}},
			Template: podTemplateSpec{
				Metadata: tmplMeta,
				Spec: podSpec{
					TerminationGracePeriodSeconds: int(ceilSeconds(killTimeout + GraceMargin)),
					Containers:                    []container{c},
					Volumes:                       []volume{{Name: "config", ConfigMap: configMapSource{Name: e.o.Name + "-config"}}},
				},
			},
		},
	}
}

// services adds a Service per TCP port of each app; app names the
// Deployment's component ("" for the shared one).
func (e *exporter) services(app string, apps []appPorts) {
	for _, ap := range apps {
		for _, p := range ap.ports {
			name := dnsLabel(ap.app.Name)
			if len(ap.ports) > 1 {
				name += "-" + strconv.Itoa(p)
			}
			e.docs = append(e.docs, service{
				APIVersion: "v1", Kind: "Service",
				Metadata: e.meta(name, e.labels(ap.app.Name)),
				Spec: serviceSpec{
					Selector: e.selector(app),
					Ports:    []servicePort{{Name: "tcp-" + strconv.Itoa(p), Port: p, TargetPort: p, Protocol: "TCP"}},
				},
			})
		}
	}
}

// configText is the keel.yaml the pods run: each app's options that differ
// from their defaults, with paths under the config's directory moved into
// WorkDir.
func (e *exporter) configText(apps []*spec.App) ([]byte, error) {
	abs, err := filepath.Abs(e.o.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("exporting %s: %w", e.o.ConfigPath, err)
	}
	base := filepath.Dir(abs)
	move := func(p string) string {
		if rel, err := filepath.Rel(base, p); err == nil && filepath.IsAbs(p) && rel != ".." && !strings.HasPrefix(rel, "../") {
			return path.Join(e.o.WorkDir, filepath.ToSlash(rel))
		}
		return p
	}
	var list []*yaml.Node
	for _, a := range apps {
		c := a.Clone()
		c.ShellEnv = nil
		if e.o.Replicas {
			c.Instances = 1
		}
		c.Cwd = move(c.Cwd)
		c.Script = move(c.Script)
		if strings.Contains(c.Interpreter, "/") {
			c.Interpreter = move(c.Interpreter)
		}
		for i, w := range c.Watch {
			c.Watch[i] = move(w)
		}
		n, err := appNode(c)
		if err != nil {
			return nil, fmt.Errorf("exporting app %s: %w", a.Name, err)
		}
		list = append(list, n)
	}
	root := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Value: "apps"},
		{Kind: yaml.SequenceNode, Content: list},
	}}
	var buf bytes.Buffer
	buf.WriteString("# made by keel export kubernetes; keel run reads it in the pod\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("writing the config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("writing the config: %w", err)
	}
	return buf.Bytes(), nil
}

// appNode is a's config keys that differ from the defaults a would get
// from its script, listen and instances alone: name and script first,
// then the rest sorted.
func appNode(a *spec.App) (*yaml.Node, error) {
	d := &spec.App{Name: a.Name, Script: a.Script, Interpreter: a.Interpreter, Listen: a.Listen, Instances: a.Instances, Cluster: a.Cluster}
	d.Normalize()
	have, err := keys(a)
	if err != nil {
		return nil, err
	}
	dflt, err := keys(d)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(have))
	for k, v := range have {
		if k == "name" || k == "script" || k == "shell_env" {
			continue
		}
		// The options that defaults are worked out from are always
		// written, the rest only where they differ.
		basis := k == "listen" || k == "cluster" || k == "interpreter" || k == "interpreter_args" || k == "instances" && a.Instances != 1
		if dv, ok := dflt[k]; ok && bytes.Equal(dv, v) && !basis {
			continue
		}
		names = append(names, k)
	}
	slices.Sort(names)
	names = append([]string{"name", "script"}, names...)
	n := &yaml.Node{Kind: yaml.MappingNode}
	for _, k := range names {
		var v any
		if err := json.Unmarshal(have[k], &v); err != nil {
			return nil, fmt.Errorf("key %s: %w", k, err)
		}
		if k == "max_memory" || k == "log_max_size" {
			f, _ := v.(float64)
			v = spec.Size(int64(f)).String()
		}
		if f, ok := v.(float64); ok && f == float64(int64(f)) {
			v = int64(f)
		}
		var val yaml.Node
		if err := val.Encode(v); err != nil {
			return nil, fmt.Errorf("key %s: %w", k, err)
		}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k}, &val)
	}
	return n, nil
}

// keys is a's config keys with their JSON values.
func keys(a *spec.App) (map[string]json.RawMessage, error) {
	b, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	return m, json.Unmarshal(b, &m)
}

func ceilSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// quantity writes bytes as a Kubernetes quantity, in Mi rounded up.
func quantity(b int64) string {
	return strconv.FormatInt((b+(1<<20)-1)>>20, 10) + "Mi"
}

// dnsLabel makes s a DNS-1035 label, as Kubernetes names want: lower
// case, '-' for anything else, starting with a letter, at most 63 bytes.
func dnsLabel(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if out == "" || out[0] < 'a' || out[0] > 'z' {
		out = "app-" + out
	}
	if len(out) > 63 {
		out = strings.TrimRight(out[:63], "-")
	}
	return out
}

func validLabel(s string) bool {
	return s != "" && dnsLabel(s) == s
}
