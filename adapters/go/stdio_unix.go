//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package flowbridge

import (
	"fmt"
	"os"
	"syscall"
)

// takeStdio moves the protocol off file descriptors 0 and 1 (SPEC section 7.1): the
// frames travel on close-on-exec duplicates, fd 1 becomes a copy of fd 2 (stderr) and
// fd 0 reads /dev/null, so nothing a handler or its child processes print or read
// can touch the frames.
func takeStdio() (in, out *os.File, err error) {
	// Hold the fork lock so no exec in another goroutine inherits a descriptor
	// before it is marked close-on-exec.
	syscall.ForkLock.Lock()
	defer syscall.ForkLock.Unlock()
	outFD, err := syscall.Dup(1)
	if err != nil {
		return nil, nil, fmt.Errorf("flowbridge: dup stdout: %w", err)
	}
	syscall.CloseOnExec(outFD)
	inFD, err := syscall.Dup(0)
	if err != nil {
		return nil, nil, fmt.Errorf("flowbridge: dup stdin: %w", err)
	}
	syscall.CloseOnExec(inFD)
	null, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("flowbridge: open %s: %w", os.DevNull, err)
	}
	if err := dup2(null, 0); err != nil {
		return nil, nil, fmt.Errorf("flowbridge: point stdin at %s: %w", os.DevNull, err)
	}
	syscall.Close(null)
	if err := dup2(2, 1); err != nil {
		return nil, nil, fmt.Errorf("flowbridge: point stdout at stderr: %w", err)
	}
	return os.NewFile(uintptr(inFD), "flow-bridge-in"), os.NewFile(uintptr(outFD), "flow-bridge-out"), nil
}
