// Package kube turns a keel config into Kubernetes manifests, for
// `keel export kubernetes`: a ConfigMap that holds the config, a
// Deployment whose container runs `keel run` with its health endpoints
// wired to the kubelet's probes, and a Service per TCP `listen` port.
//
// Two shapes:
//
//   - By default one Deployment runs every app, and an app's `instances`
//     stay processes inside the pod: keel keeps its sockets, reloads,
//     crash groups and restart policy there, and the Deployment's replicas
//     multiply whole pods.
//   - With Replicas, every app gets a Deployment of its own that runs
//     `keel run --only APP` with one instance, and the app's `instances`
//     become the Deployment's replicas.
//
// What the Kubernetes objects cannot say is reported as Notes, in the
// kompose style, never silently dropped: a loopback or unix listen address
// a Service cannot reach, watch and cron_restart under replicas, an app
// with no max_memory (so no memory limit), env written into the ConfigMap
// (names only, never values).
//
// The output is deterministic: the same config and options give the same
// bytes. The manifests are written with go.yaml.in/yaml/v3 from the small
// structs in this package, shaped like k8s.io/api's types (whose module
// keel does not link); the tests decode every manifest strictly into the
// official types.
package kube
