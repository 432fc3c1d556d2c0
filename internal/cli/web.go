package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keel-run/keel/internal/api"
	"github.com/keel-run/keel/internal/web"
)

func (r *runner) webCommand() *cobra.Command {
	var (
		listen string
		off    bool
		asJSON *bool
	)
	cmd := command("web [--listen ADDR] [--off]", "the daemon's dashboard and /metrics over HTTP", exactArgs(), func(cmd *cobra.Command, args []string) error {
		if off && cmd.Flags().Changed("listen") {
			return usagef(cmd, "web: --off and --listen do not go together")
		}
		if !off {
			loopback, err := web.CheckListen(listen)
			if err != nil {
				return usagef(cmd, "web: %v", err)
			}
			if !loopback {
				fmt.Fprintf(r.stdio.Err, "warning: %s is reachable from other machines: anyone who can reach it reads /metrics (app names, memory, CPU, restarts) without a token, and the token that allows restart, reload, stop and scale travels over plain HTTP, where anyone on the path can read it. Keep it on 127.0.0.1, or put a TLS proxy and a firewall in front.\n", listen)
			}
		}
		c, err := r.daemon(cmd.Context())
		if err != nil {
			return fail("web", err)
		}
		req := api.WebRequest{Listen: listen, Off: off}
		if !cmd.Flags().Changed("listen") {
			req.Listen = "" // the daemon keeps its current address
		}
		info, err := c.Web(cmd.Context(), req)
		if err != nil {
			return fail("web", err)
		}
		if *asJSON {
			if off {
				return fail("web", writeJSON(r.stdio.Out, info))
			}
			return fail("web", writeJSON(r.stdio.Out, struct {
				URL    string `json:"url"`
				Listen string `json:"listen"`
				Token  string `json:"token"`
			}{info.URL, info.Listen, info.Token}))
		}
		if off {
			_, err = fmt.Fprintln(r.stdio.Out, "web listener off")
			return fail("web", err)
		}
		_, err = fmt.Fprintf(r.stdio.Out, "dashboard: %s\nmetrics:   http://%s/metrics (no token needed)\ntoken:     %s (kept in %s/%s)\n",
			info.URL, info.Listen, info.Token, c.Home(), web.TokenName)
		return fail("web", err)
	})
	cmd.Long = "Turns on the daemon's HTTP listener: a live dashboard at / (behind a login\n" +
		"token, printed here) and Prometheus metrics at /metrics. The setting holds\n" +
		"across daemon restarts; --off turns it off."
	cmd.Flags().StringVar(&listen, "listen", web.DefaultListen, "address to listen on, host:port")
	cmd.Flags().BoolVar(&off, "off", false, "turn the listener off")
	asJSON = jsonFlag(cmd)
	return cmd
}
