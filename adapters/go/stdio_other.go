//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly || windows)

package flowbridge

import "os"

// takeStdio on other systems uses stdin and stdout as they are: a handler must not
// write to stdout there.
func takeStdio() (in, out *os.File, err error) { return os.Stdin, os.Stdout, nil }
