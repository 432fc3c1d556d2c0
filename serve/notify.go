package serve

import (
	"fmt"
	"net"
	"os"
)

const envNotifySocket = "NOTIFY_SOCKET"

// Notify sends state, one or more newline-separated sd_notify assignments
// such as "READY=1", "STATUS=serving", "STOPPING=1" or "WATCHDOG=1", as one
// datagram to the unix socket named by NOTIFY_SOCKET: keel's readiness
// channel for apps with `ready: notify`, and systemd's for Type=notify
// services. A name starting with '@' is a Linux abstract socket.
//
// Notify returns nil without doing anything when NOTIFY_SOCKET is unset (the
// process is not supervised that way), an error if it is neither an absolute
// path nor an abstract name, and the socket's error if the datagram could not
// be sent. It leaves NOTIFY_SOCKET set: any process of the app may notify.
// It is safe to call from several goroutines.
func Notify(state string) error {
	addr := os.Getenv(envNotifySocket)
	if addr == "" {
		return nil
	}
	if addr[0] != '/' && addr[0] != '@' {
		return fmt.Errorf("serve: NOTIFY_SOCKET=%q is neither an absolute path nor an abstract socket name (@…)", addr)
	}
	// The net package maps a leading '@' to the abstract namespace.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("serve: notifying %s: %w", addr, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("serve: notifying %s: %w", addr, err)
	}
	return nil
}
