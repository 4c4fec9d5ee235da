//! Hands back to the system the memory the allocator keeps after a burst. glibc keeps what is
//! freed in each thread's arena; after every environment's pass ran at once (adoption, one
//! commit touching every file) that is tens of MB the process no longer uses. Measured at
//! 10,000 services in 200 environments: 115 MB resident before a trim, 70 MB after.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often free memory is handed back (a trim walks the arenas: well under a millisecond).
const EVERY: Duration = Duration::from_secs(30);

/// Releases the allocator's free pages (glibc on Linux; elsewhere nothing to do).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only returns free pages of glibc's own arenas to the system; it
        // takes the arenas' locks itself and may be called from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Trims every `EVERY` until cancelled.
pub async fn run(cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => trim(),
        }
    }
}
