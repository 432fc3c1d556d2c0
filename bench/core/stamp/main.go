// Command stamp is the bench's probe app. The first thing it does is read
// CLOCK_REALTIME and send "<pid> <unix nanoseconds>" in one UDP datagram
// to the address in its first argument; then it sleeps forever, or, when
// its second argument is "exit", exits 1 at once (a crash loop).
//
//	stamp 127.0.0.1:9000        # long-running
//	stamp 127.0.0.1:9000 exit   # exits 1 right after the datagram
//
// It imports little (no net, no flag), so that little runs
// before main: its exec-to-main time is what the bench subtracts from a
// respawn to get the process manager's own share.
package main

import (
	"errors"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	now := time.Now().UnixNano()
	if len(os.Args) < 2 {
		os.Stderr.WriteString("usage: stamp host:port [exit]\n")
		os.Exit(2)
	}
	if err := send(os.Args[1], strconv.Itoa(os.Getpid())+" "+strconv.FormatInt(now, 10)); err != nil {
		os.Stderr.WriteString("stamp: " + err.Error() + "\n")
	}
	if len(os.Args) > 2 && os.Args[2] == "exit" {
		os.Exit(1)
	}
	for {
		time.Sleep(time.Hour)
	}
}

// send sends msg in one datagram to addr, an IPv4 "a.b.c.d:port".
func send(addr, msg string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return errors.New("not an IPv4 host:port: " + addr)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return syscall.Sendto(fd, []byte(msg), 0, &syscall.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())})
}
