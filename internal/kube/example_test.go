package kube_test

import (
	"fmt"
	"strings"

	"github.com/keel-run/keel/internal/kube"
	"github.com/keel-run/keel/internal/spec"
)

// Export an app as config.Load returns it (absolute paths, defaults filled
// in): the manifests on stdout, the notes on stderr.
func ExampleExport() {
	app := &spec.App{Name: "api", Script: "/src/shop/api.js", Cwd: "/src/shop", Instances: 2, Listen: []string{":8080"}, KillTimeout: spec.Duration(30e9)}
	app.Normalize()
	out, notes, err := kube.Export(kube.Options{Apps: []*spec.App{app}, ConfigPath: "/src/shop/keel.yaml", Image: "registry.example.com/shop:1.4"})
	if err != nil {
		panic(err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "kind:") || strings.Contains(l, "terminationGracePeriodSeconds") || strings.Contains(l, "script:") {
			fmt.Println(strings.TrimSpace(l))
		}
	}
	fmt.Println(notes)
	// Output:
	// kind: ConfigMap
	// script: /app/api.js
	// kind: Deployment
	// terminationGracePeriodSeconds: 35
	// kind: Service
	// [app api: no max_memory, so the pod gets no memory limit]
}
