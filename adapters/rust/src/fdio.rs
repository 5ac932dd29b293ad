//! Moving the protocol off fd 0 and fd 1 (SPEC.md section 7, point 1).

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Duplicate fd 0 and fd 1 (close-on-exec) for the protocol, then point fd 1 at fd 2
/// and fd 0 at /dev/null. Returns (frames in, frames out).
pub(crate) fn take_stdio() -> io::Result<(File, File)> {
    // SAFETY: plain descriptor calls; the new descriptors are owned by the Files below.
    unsafe {
        let out = check(libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3))?;
        let inp = match check(libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3)) {
            Ok(fd) => fd,
            Err(e) => {
                libc::close(out);
                return Err(e);
            }
        };
        let devnull_w = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        // Anything written to fd 1 from now on (println!, a sub-process) goes to stderr.
        // Bytes that std's stdout buffer holds without a newline yet go there too.
        if libc::dup2(2, 1) < 0 && devnull_w >= 0 {
            libc::dup2(devnull_w, 1);
        }
        if devnull_w >= 0 {
            libc::close(devnull_w);
        }
        let devnull_r = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if devnull_r >= 0 {
            libc::dup2(devnull_r, 0);
            libc::close(devnull_r);
        }
        Ok((File::from_raw_fd(inp), File::from_raw_fd(out)))
    }
}
