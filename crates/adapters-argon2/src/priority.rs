//! The hashing threads give way to the threads that serve requests. A hash is 10 to 20 ms of
//! CPU that nobody waits on by the millisecond; a health probe, a refusal or a database reply on
//! the same core is a few microseconds that a load balancer or a client is timing. At the same
//! priority the scheduler often lets a running hash finish its time slice first: with the
//! server on one core under load, `/healthz` answered in 4 to 5 ms at the 99th percentile at the
//! same priority and in 2 to 3 ms with the hashing thread at nice 10, with no change in
//! registrations per second.

/// The nice value of a hashing thread: the request threads, at 0, get about nine times its
/// share of a core they both want, and the hashing threads still have every cycle they leave.
#[cfg(target_os = "linux")]
const NICENESS: i32 = 10;

/// Lowers the scheduling priority of the calling thread. On Linux a nice value belongs to one
/// thread; elsewhere it would lower the whole process, so there this does nothing.
pub(crate) fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        if let Err(error) =
            rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICENESS)
        {
            tracing::debug!(%error, "could not lower the priority of a hashing thread");
        }
    }
}
