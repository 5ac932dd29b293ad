//! Tests that play the bridge with the internal codec, so they live inside the crate:
//! the shared vectors, the serve loop in-process, and the echo example as a subprocess.

mod echo_process;
mod serve;
mod vectors;
