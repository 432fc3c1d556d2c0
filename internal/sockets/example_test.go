package sockets_test

import (
	"fmt"
	"os"
	"os/exec"

	"github.com/keel-run/keel/internal/sockets"
)

func ExampleParse() {
	for _, s := range []string{":3000", "tcp://127.0.0.1:3000", "[::1]:3000", "unix:///run/app.sock"} {
		a, err := sockets.Parse(s)
		if err != nil {
			panic(err)
		}
		fmt.Printf("%-22s %-20s %s\n", s, a, a.Name())
	}
	// Output:
	// :3000                  :3000                tcp-3000
	// tcp://127.0.0.1:3000   127.0.0.1:3000       tcp-127.0.0.1-3000
	// [::1]:3000             [::1]:3000           tcp-__1-3000
	// unix:///run/app.sock   unix:///run/app.sock unix-/run/app.sock
}

func ExampleListen() {
	a, _ := sockets.Parse("127.0.0.1:0")
	l, err := sockets.Listen(a, sockets.Options{})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	// The child gets the socket as fd 3. (LISTEN_PID must be the child's
	// own pid; keel's proc package sets it in a pre-exec step.)
	cmd := exec.Command("true")
	cmd.ExtraFiles = []*os.File{l.File()}
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES="+sockets.FDNames(l.Addr()))
	fmt.Println(cmd.Env[len(cmd.Env)-1])
	// Output: LISTEN_FDNAMES=tcp-127.0.0.1-0
}

func ExampleTCPAddr() {
	// A Node app in cluster mode calls listen(3000) with no host and no
	// `listen` names the port: keel binds it once, as Node would (every
	// interface, dual-stack unless ipv6Only), and shares it with every
	// instance. (Port 0 here, so the example needs no free port 3000.)
	l, err := sockets.Listen(sockets.TCPAddr("", 0), sockets.Options{IPv6Only: false})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	fmt.Println(l.Addr(), l.Name())
	// Output: :0 tcp-0
}

func ExampleSet() {
	set := sockets.NewSet(nil)
	defer set.Close()
	listen := []string{"127.0.0.1:0"}
	// Each instance slot of the app gets its own member of the group.
	for slot := 0; slot < 2; slot++ {
		files, names, err := set.Files("web", listen, slot)
		if err != nil {
			panic(err)
		}
		fmt.Println("instance", slot, "inherits", len(files), "socket named", names[0])
	}
	// The supervisor says which slots serve; new connections go there.
	set.Serving("web", []int{1})
	fmt.Println(len(set.Names("web", listen)), "address")
	// Output:
	// instance 0 inherits 1 socket named tcp-127.0.0.1-0
	// instance 1 inherits 1 socket named tcp-127.0.0.1-0
	// 1 address
}
