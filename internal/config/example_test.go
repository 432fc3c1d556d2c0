package config_test

import (
	"fmt"

	"github.com/keel-run/keel/internal/config"
	"github.com/keel-run/keel/internal/spec"
)

func ExampleLoad() {
	apps, err := config.Load("testdata/keel/keel.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, a := range apps {
		fmt.Println(a.Name, a.Instances, a.KillTimeout, a.Restart)
	}
	// Output:
	// api 4 8s always
	// worker 1 5s on-failure
	// tool 1 8s always
}

func ExampleSet() {
	var app spec.App
	for _, kv := range [][2]string{
		{"name", "api"}, {"instances", "2"}, {"kill-timeout", "3000"}, {"env", "PORT=3000"}, {"args", `--mode "fast start"`},
	} {
		if err := config.Set(&app, kv[0], kv[1]); err != nil {
			fmt.Println(err)
		}
	}
	fmt.Println(app.Name, app.Instances, app.KillTimeout, app.Env["PORT"], len(app.Args))
	fmt.Println(config.Set(&app, "max-memory", "lots"))
	// Output:
	// api 2 3s 3000 2
	// --max-memory: size "lots": want e.g. 300M, 1G or a number of bytes
}

func ExampleOptions() {
	for _, o := range config.Options()[:3] {
		fmt.Printf("--%s (%s) %s\n", o.Flag, o.Kind, o.Key)
	}
	// Output:
	// --name (string) name
	// --script (string) script
	// --args (list) args
}
