//! Moving the protocol off the standard handles on Windows (SPEC.md section 7, point 1).

use std::fs::File;
use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, IntoRawHandle, RawHandle};

// SetStdHandle's names for the standard handles (WinBase.h: (DWORD)-10 and (DWORD)-11).
const STD_INPUT_HANDLE: u32 = -10i32 as u32;
const STD_OUTPUT_HANDLE: u32 = -11i32 as u32;

#[link(name = "kernel32")]
extern "system" {
    fn SetStdHandle(which: u32, handle: RawHandle) -> i32;
}

/// Non-inheritable duplicates of the stdin and stdout handles carry the frames; then the
/// process's standard output handle becomes stderr's and its standard input `NUL`.
/// Windows has no dup2 for handles, but std asks Windows for the standard handle at each
/// write, so `println!` lands on stderr from then on, and so does a child process started
/// with inherited stdio. Returns (frames in, frames out).
pub(crate) fn take_stdio() -> io::Result<(File, File)> {
    let input = io::stdin().as_handle().try_clone_to_owned()?;
    let output = io::stdout().as_handle().try_clone_to_owned()?;
    let null = File::open("NUL")?;
    // SAFETY: SetStdHandle only records handle values. stderr's stays owned by the process;
    // NUL's is given up on purpose, as it stays the standard input until the process ends.
    unsafe {
        if SetStdHandle(STD_OUTPUT_HANDLE, io::stderr().as_raw_handle()) == 0 {
            return Err(io::Error::last_os_error());
        }
        if SetStdHandle(STD_INPUT_HANDLE, null.into_raw_handle()) == 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((File::from(input), File::from(output)))
}
