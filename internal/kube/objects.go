package kube

// The few Kubernetes object shapes keel writes, with the field names and
// nesting of k8s.io/api (core/v1, apps/v1). Only what Export fills in is
// here; empty fields are left out of the YAML.

type meta struct {
	Name        string            `yaml:"name,omitempty"`
	Namespace   string            `yaml:"namespace,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

type configMap struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   meta              `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
}

type deployment struct {
	APIVersion string         `yaml:"apiVersion"`
	Kind       string         `yaml:"kind"`
	Metadata   meta           `yaml:"metadata"`
	Spec       deploymentSpec `yaml:"spec"`
}

type deploymentSpec struct {
	Replicas int             `yaml:"replicas"`
	Selector labelSelector   `yaml:"selector"`
	Strategy *strategy       `yaml:"strategy,omitempty"`
	Template podTemplateSpec `yaml:"template"`
}

type strategy struct {
	Type          string         `yaml:"type"`
	RollingUpdate *rollingUpdate `yaml:"rollingUpdate,omitempty"`
}

type rollingUpdate struct {
	MaxUnavailable int `yaml:"maxUnavailable"`
	MaxSurge       int `yaml:"maxSurge"`
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type podTemplateSpec struct {
	Metadata meta    `yaml:"metadata"`
	Spec     podSpec `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
	Containers                    []container `yaml:"containers"`
	Volumes                       []volume    `yaml:"volumes,omitempty"`
}

type container struct {
	Name           string        `yaml:"name"`
	Image          string        `yaml:"image"`
	Args           []string      `yaml:"args"`
	WorkingDir     string        `yaml:"workingDir,omitempty"`
	Env            []envVar      `yaml:"env,omitempty"`
	Ports          []port        `yaml:"ports,omitempty"`
	StartupProbe   *probe        `yaml:"startupProbe,omitempty"`
	ReadinessProbe *probe        `yaml:"readinessProbe,omitempty"`
	LivenessProbe  *probe        `yaml:"livenessProbe,omitempty"`
	Resources      *resources    `yaml:"resources,omitempty"`
	VolumeMounts   []volumeMount `yaml:"volumeMounts,omitempty"`
}

type envVar struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

type port struct {
	Name          string `yaml:"name,omitempty"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

type probe struct {
	HTTPGet          httpGet `yaml:"httpGet"`
	PeriodSeconds    int     `yaml:"periodSeconds"`
	TimeoutSeconds   int     `yaml:"timeoutSeconds"`
	FailureThreshold int     `yaml:"failureThreshold"`
}

type httpGet struct {
	Path string `yaml:"path"`
	Port string `yaml:"port"` // the container port's name
}

type resources struct {
	Requests map[string]string `yaml:"requests,omitempty"`
	Limits   map[string]string `yaml:"limits,omitempty"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type volume struct {
	Name      string          `yaml:"name"`
	ConfigMap configMapSource `yaml:"configMap"`
}

type configMapSource struct {
	Name string `yaml:"name"`
}

type service struct {
	APIVersion string      `yaml:"apiVersion"`
	Kind       string      `yaml:"kind"`
	Metadata   meta        `yaml:"metadata"`
	Spec       serviceSpec `yaml:"spec"`
}

type serviceSpec struct {
	Selector map[string]string `yaml:"selector"`
	Ports    []servicePort     `yaml:"ports"`
}

type servicePort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort int    `yaml:"targetPort"`
	Protocol   string `yaml:"protocol"`
}
