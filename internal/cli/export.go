package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keel-run/keel/internal/config"
	"github.com/keel-run/keel/internal/kube"
)

func (r *runner) exportCommand() *cobra.Command {
	cmd := command("export", "print manifests that run a config's apps elsewhere (kubernetes)", nil, nil)
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return usagef(cmd, "export: missing the target: kubernetes")
		}
		return usagef(cmd, "export: unknown target %q (want kubernetes)", args[0])
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error { return nil }
	cmd.AddCommand(r.exportKubernetesCommand())
	return cmd
}

func (r *runner) exportKubernetesCommand() *cobra.Command {
	var o kube.Options
	cmd := command("kubernetes <config>", "print a ConfigMap, a Deployment running keel run with probes, and a Service per listen port", exactArgs("config"), func(cmd *cobra.Command, args []string) error {
		path := args[0]
		what := "export kubernetes " + path
		if !config.IsConfigFile(path) {
			return usagef(cmd, "export kubernetes: %s is not a config file (keel.yaml/.yml/.json/.toml or ecosystem.config.js)", path)
		}
		apps, err := config.Load(path)
		if err != nil {
			return fail("export kubernetes", err) // the error names the file
		}
		o.Apps, o.ConfigPath = apps, path
		out, notes, err := kube.Export(o)
		if err != nil {
			return fail(what, err)
		}
		// kompose's way: what did not translate goes to stderr, the
		// manifests alone to stdout, so `> k8s.yaml` keeps them clean.
		for _, n := range notes {
			fmt.Fprintf(r.stdio.Err, "keel: note: %s\n", n)
		}
		_, err = r.stdio.Out.Write(out)
		return fail(what, err)
	})
	cmd.Aliases = []string{"k8s"}
	cmd.Long = "Print Kubernetes manifests for the apps of a config file, as YAML on stdout:\n" +
		"a ConfigMap with the config, a Deployment whose container runs `keel run` with\n" +
		"--health wired to liveness, readiness and startup probes, and a Service per TCP listen port.\n" +
		"By default an app's instances stay processes in one pod; --replicas makes one Deployment\n" +
		"per app with its instances as pod replicas. What does not translate is noted on stderr."
	cmd.Example = "  keel export kubernetes keel.yaml --image registry.example.com/shop:1.4 > k8s.yaml\n" +
		"  keel export kubernetes keel.yaml --replicas --namespace shop | kubectl apply -f -"
	f := cmd.Flags()
	f.StringVar(&o.Image, "image", "", "the container image, holding keel and the app (default: NAME:latest)")
	f.StringVar(&o.Name, "name", "", "name of the objects (default: the only app's name, else the config's directory)")
	f.StringVar(&o.Namespace, "namespace", "", "namespace of the objects (default: none, kubectl's current one)")
	f.BoolVar(&o.Replicas, "replicas", false, "one Deployment per app, its instances as pod replicas")
	f.IntVar(&o.HealthPort, "health-port", kube.DefaultHealthPort, "port of keel run's --health endpoints in the pod")
	f.StringVar(&o.WorkDir, "workdir", kube.DefaultWorkDir, "where the image holds the config's directory")
	return cmd
}
