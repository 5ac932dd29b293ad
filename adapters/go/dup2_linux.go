package flowbridge

import "syscall"

// dup2 for Linux, where some architectures (arm64, riscv64) have only dup3.
func dup2(oldfd, newfd int) error { return syscall.Dup3(oldfd, newfd, 0) }
