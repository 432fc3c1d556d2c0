package sockets

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// skfNetOff makes a classic BPF load relative to the packet's network
// header: SKF_NET_OFF (-0x100000 in linux/filter.h) as the kernel reads
// the 32-bit field.
const skfNetOff uint32 = 0xfff00000

// fallback is an index past every group: the kernel then picks a member by
// its own hash.
const fallback = 0xffffffff

// maxSteered bounds the slots one program can list (classic BPF programs
// have at most 4096 instructions).
const maxSteered = 1000

// Steer makes the SO_REUSEPORT group that f belongs to hand each new
// connection to one of the members at the given indexes (a member's index
// is its position in the group: the order the members started listening,
// as long as none has been closed). The member is picked by the client's
// source port (halved, as Linux hands out even ports to connect), which
// spreads connections like a hash and keeps a retransmitted SYN on the
// member of the first. With no indexes the group goes back to the
// kernel's own hash over every member.
func Steer(f *os.File, indexes []int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("steer %s: %w", f.Name(), err)
	}
	if len(indexes) > maxSteered {
		return fmt.Errorf("steer %s: %d members, at most %d", f.Name(), len(indexes), maxSteered)
	}
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		if len(indexes) == 0 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
			if serr == unix.ENOENT { // nothing attached
				serr = nil
			}
			if serr != nil {
				serr = os.NewSyscallError("setsockopt SO_DETACH_REUSEPORT_BPF", serr)
			}
			return
		}
		prog := steerProgram(indexes)
		fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: unsafe.SliceData(prog)}
		if err := unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog); err != nil {
			serr = os.NewSyscallError("setsockopt SO_ATTACH_REUSEPORT_CBPF", err)
		}
	})
	if cerr != nil {
		return fmt.Errorf("steer %s: %w", f.Name(), cerr)
	}
	if serr != nil {
		return fmt.Errorf("steer %s: %w", f.Name(), serr)
	}
	return nil
}

func stmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }

func jump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

// steerProgram returns indexes[(source port >> 1) % len(indexes)] for a
// TCP segment over IPv4 or IPv6 (without extension headers), and fallback
// for anything else.
//
//	ldb  [net+0]            A = version and IHL
//	rsh  #4
//	jeq  #4, v4, next
//	jeq  #6, v6, other
//	v4:  ldxb 4*([net+0]&0xf)  X = IPv4 header length
//	     ldh  [x+net+0]        A = source port
//	     ja   pick
//	v6:  ldh  [net+40]
//	     ja   pick
//	other: ret #fallback
//	pick: rsh #1; mod #n; jeq #0 → ret indexes[0]; jeq #1 → …
func steerProgram(indexes []int) []unix.SockFilter {
	const net = skfNetOff
	n := uint32(len(indexes))
	p := []unix.SockFilter{
		// Jumps count instructions after the next one.
		stmt(unix.BPF_LD|unix.BPF_B|unix.BPF_ABS, net),      // 0
		stmt(unix.BPF_ALU|unix.BPF_RSH|unix.BPF_K, 4),       // 1
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, 4, 1, 0), // 2: v4 → 4
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, 6, 3, 5), // 3: v6 → 7, other → 9
		stmt(unix.BPF_LDX|unix.BPF_B|unix.BPF_MSH, net),     // 4
		stmt(unix.BPF_LD|unix.BPF_H|unix.BPF_IND, net),      // 5
		stmt(unix.BPF_JMP|unix.BPF_JA, 3),                   // 6: → 10
		stmt(unix.BPF_LD|unix.BPF_H|unix.BPF_ABS, net+40),   // 7
		stmt(unix.BPF_JMP|unix.BPF_JA, 1),                   // 8: → 10
		stmt(unix.BPF_RET|unix.BPF_K, fallback),             // 9
	}
	p = append(p,
		stmt(unix.BPF_ALU|unix.BPF_RSH|unix.BPF_K, 1), // 10: pick
		stmt(unix.BPF_ALU|unix.BPF_MOD|unix.BPF_K, n), // 11
	)
	for i, idx := range indexes {
		p = append(p,
			jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, uint32(i), 0, 1),
			stmt(unix.BPF_RET|unix.BPF_K, uint32(idx)),
		)
	}
	return append(p, stmt(unix.BPF_RET|unix.BPF_K, fallback))
}
