"""The real Win32 calls behind `_windows.WinAPI`, through ctypes.

Why ctypes: the groups need eight kernel32 calls, and ctypes is in every Python. pywin32
(win32job) has them too and is well kept, but it is a 10 MB native package for Windows
alone that CI on Linux could neither install nor type-check; WinJobster starts processes
itself (asyncio must start ours, for the pipes) and is GPL-3.0 with DLLs of its own.

Structures are written with fixed-width fields (DWORD is 32 bits on Windows, where
ctypes' c_ulong is too, but not on Linux), so their sizes can be checked anywhere.
Nothing here touches kernel32 before Kernel32() is made, which `_windows` does on first
use, on Windows only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from ctypes import c_int32, c_int64, c_size_t, c_uint32, c_uint64, c_void_p

# Win32 constants (WinNT.h, TlHelp32.h); their values are fixed by the Windows ABI.
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9  # JobObjectExtendedLimitInformation
PROCESS_TERMINATE = 0x0001
PROCESS_SET_QUOTA = 0x0100  # AssignProcessToJobObject needs it, with PROCESS_TERMINATE
THREAD_SUSPEND_RESUME = 0x0002
TH32CS_SNAPTHREAD = 0x00000004
RESUME_FAILED = 0xFFFFFFFF  # ResumeThread's (DWORD)-1
INVALID_HANDLE_VALUE = c_void_p(-1).value


class IO_COUNTERS(ctypes.Structure):  # the names of the Windows SDK
    _fields_ = [(name, c_uint64) for name in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


class JOBOBJECT_BASIC_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [
        ("PerProcessUserTimeLimit", c_int64),
        ("PerJobUserTimeLimit", c_int64),
        ("LimitFlags", c_uint32),
        ("MinimumWorkingSetSize", c_size_t),
        ("MaximumWorkingSetSize", c_size_t),
        ("ActiveProcessLimit", c_uint32),
        ("Affinity", c_size_t),  # ULONG_PTR
        ("PriorityClass", c_uint32),
        ("SchedulingClass", c_uint32),
    ]


class JOBOBJECT_EXTENDED_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [
        ("BasicLimitInformation", JOBOBJECT_BASIC_LIMIT_INFORMATION),
        ("IoInfo", IO_COUNTERS),
        ("ProcessMemoryLimit", c_size_t),
        ("JobMemoryLimit", c_size_t),
        ("PeakProcessMemoryUsed", c_size_t),
        ("PeakJobMemoryUsed", c_size_t),
    ]


class THREADENTRY32(ctypes.Structure):
    _fields_ = [
        ("dwSize", c_uint32),
        ("cntUsage", c_uint32),
        ("th32ThreadID", c_uint32),
        ("th32OwnerProcessID", c_uint32),
        ("tpBasePri", c_int32),
        ("tpDeltaPri", c_int32),
        ("dwFlags", c_uint32),
    ]


# The rest calls Windows; mypy's `--platform win32` run checks it, the others skip it.
assert sys.platform == "win32", "the Win32 calls were imported off Windows"


class Kernel32:
    """`_windows.WinAPI` on kernel32.dll."""

    def __init__(self) -> None:
        k = ctypes.WinDLL("kernel32", use_last_error=True)
        k.CreateJobObjectW.argtypes = [c_void_p, c_void_p]
        k.CreateJobObjectW.restype = c_void_p
        k.SetInformationJobObject.argtypes = [c_void_p, c_int32, c_void_p, c_uint32]
        k.SetInformationJobObject.restype = c_int32
        k.AssignProcessToJobObject.argtypes = [c_void_p, c_void_p]
        k.AssignProcessToJobObject.restype = c_int32
        k.TerminateJobObject.argtypes = [c_void_p, c_uint32]
        k.TerminateJobObject.restype = c_int32
        k.OpenProcess.argtypes = [c_uint32, c_int32, c_uint32]
        k.OpenProcess.restype = c_void_p
        k.TerminateProcess.argtypes = [c_void_p, c_uint32]
        k.TerminateProcess.restype = c_int32
        k.CreateToolhelp32Snapshot.argtypes = [c_uint32, c_uint32]
        k.CreateToolhelp32Snapshot.restype = c_void_p
        k.Thread32First.argtypes = [c_void_p, ctypes.POINTER(THREADENTRY32)]
        k.Thread32First.restype = c_int32
        k.Thread32Next.argtypes = [c_void_p, ctypes.POINTER(THREADENTRY32)]
        k.Thread32Next.restype = c_int32
        k.OpenThread.argtypes = [c_uint32, c_int32, c_uint32]
        k.OpenThread.restype = c_void_p
        k.ResumeThread.argtypes = [c_void_p]
        k.ResumeThread.restype = c_uint32
        k.CloseHandle.argtypes = [c_void_p]
        k.CloseHandle.restype = c_int32
        self._k = k

    @staticmethod
    def _fail() -> OSError:
        return ctypes.WinError(ctypes.get_last_error())

    def _handle(self, value: int | None) -> int:
        if not value or value == INVALID_HANDLE_VALUE:
            raise self._fail()
        return int(value)

    def _ok(self, result: int) -> None:
        if not result:
            raise self._fail()

    def create_job(self) -> int:
        job = self._handle(self._k.CreateJobObjectW(None, None))
        info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not self._k.SetInformationJobObject(
            job, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS, ctypes.byref(info), ctypes.sizeof(info)
        ):
            error = self._fail()
            self._k.CloseHandle(job)
            raise error
        return job

    def open_process(self, pid: int) -> int:
        return self._handle(self._k.OpenProcess(PROCESS_TERMINATE | PROCESS_SET_QUOTA, False, pid))

    def assign(self, job: int, process: int) -> None:
        self._ok(self._k.AssignProcessToJobObject(job, process))

    def resume(self, pid: int) -> None:
        # A process started suspended has one thread; the snapshot lists every thread of the
        # system, so the ones of this pid are picked out.
        snapshot = self._handle(self._k.CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0))
        resumed = 0
        try:
            entry = THREADENTRY32()
            entry.dwSize = ctypes.sizeof(entry)
            more = self._k.Thread32First(snapshot, ctypes.byref(entry))
            while more:
                if entry.th32OwnerProcessID == pid:
                    thread = self._handle(self._k.OpenThread(THREAD_SUSPEND_RESUME, False, entry.th32ThreadID))
                    try:
                        if self._k.ResumeThread(thread) == RESUME_FAILED:
                            raise self._fail()
                        resumed += 1
                    finally:
                        self._k.CloseHandle(thread)
                more = self._k.Thread32Next(snapshot, ctypes.byref(entry))
        finally:
            self._k.CloseHandle(snapshot)
        if not resumed:
            raise OSError(f"process {pid} has no thread to resume")

    def ctrl_break(self, pid: int) -> None:
        os.kill(pid, signal.CTRL_BREAK_EVENT)  # GenerateConsoleCtrlEvent for the group pid leads

    def terminate_job(self, job: int, code: int) -> None:
        self._ok(self._k.TerminateJobObject(job, code))

    def terminate_process(self, process: int, code: int) -> None:
        self._ok(self._k.TerminateProcess(process, code))

    def close(self, handle: int) -> None:
        self._ok(self._k.CloseHandle(handle))
