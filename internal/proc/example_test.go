package proc_test

import (
	"fmt"
	"os"
	"syscall"

	"github.com/keel-run/keel/internal/proc"
)

func ExampleStart() {
	p, err := proc.Start(proc.Options{
		Argv:            []string{"sh", "-c", "sleep 60 & exit 3"},
		Env:             []string{"PATH=" + os.Getenv("PATH")},
		KillGroupOnExit: true, // the background sleep goes with sh
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	<-p.Done()
	fmt.Println(p.Exit())
	fmt.Println(p.Signal(syscall.SIGTERM) == os.ErrProcessDone)
	// Output:
	// code 3
	// true
}
