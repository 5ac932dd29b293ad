//go:build windows

package flowbridge

import (
	"fmt"
	"os"
	"syscall"
)

// kernel32's SetStdHandle, which package syscall does not wrap; the only call made by name.
var procSetStdHandle = syscall.NewLazyDLL("kernel32.dll").NewProc("SetStdHandle")

// takeStdio moves the protocol off the standard handles (SPEC section 7.1), the Windows
// way: Windows has no dup2 for handles, so the frames travel on non-inheritable
// duplicates of the stdin and stdout handles, and the process's standard output handle
// becomes stderr's and its standard input NUL (SetStdHandle), which is what a child
// process started with inherited handles gets. os.Stdout and os.Stdin still hold the
// old handles, so they are pointed at stderr and NUL too: fmt.Println and
// os.Stdout.Write land in the bridge's log.
func takeStdio() (in, out *os.File, err error) {
	self, err := syscall.GetCurrentProcess()
	if err != nil {
		return nil, nil, fmt.Errorf("flowbridge: GetCurrentProcess: %w", err)
	}
	private := func(h syscall.Handle, what string) (syscall.Handle, error) {
		var dup syscall.Handle
		err := syscall.DuplicateHandle(self, h, self, &dup, 0, false, syscall.DUPLICATE_SAME_ACCESS)
		if err != nil {
			return 0, fmt.Errorf("flowbridge: duplicate %s: %w", what, err)
		}
		return dup, nil
	}
	inH, err := private(syscall.Handle(os.Stdin.Fd()), "stdin")
	if err != nil {
		return nil, nil, err
	}
	outH, err := private(syscall.Handle(os.Stdout.Fd()), "stdout")
	if err != nil {
		syscall.CloseHandle(inH)
		return nil, nil, err
	}
	null, err := syscall.Open(os.DevNull, syscall.O_RDONLY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("flowbridge: open %s: %w", os.DevNull, err)
	}
	if err := setStdHandle(syscall.STD_OUTPUT_HANDLE, syscall.Handle(os.Stderr.Fd())); err != nil {
		return nil, nil, fmt.Errorf("flowbridge: point stdout at stderr: %w", err)
	}
	if err := setStdHandle(syscall.STD_INPUT_HANDLE, null); err != nil {
		return nil, nil, fmt.Errorf("flowbridge: point stdin at %s: %w", os.DevNull, err)
	}
	os.Stdout = os.Stderr
	os.Stdin = os.NewFile(uintptr(null), os.DevNull)
	return os.NewFile(uintptr(inH), "flow-bridge-in"), os.NewFile(uintptr(outH), "flow-bridge-out"), nil
}

func setStdHandle(which int, h syscall.Handle) error {
	// which is negative ((DWORD)-11 for stdout): converted at run time, it wraps as the DWORD does.
	if ok, _, err := procSetStdHandle.Call(uintptr(which), uintptr(h)); ok == 0 {
		return err
	}
	return nil
}
