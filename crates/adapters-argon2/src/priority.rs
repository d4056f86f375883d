//! The hashing threads give way to the threads that serve requests. A hash is 10 to 40 ms of
//! CPU that nobody waits on by the millisecond; a health probe, a refusal or a database reply on
//! the same core is a few microseconds that a load balancer or a client is timing.
//!
//! On Linux they run under `SCHED_IDLE`: any other thread that wakes on their core takes it at
//! once. A higher nice value is not enough: with the server on one core under 256 clients,
//! `/healthz` answered in 1.2 to 4.0 ms at the 99th percentile with the hashing thread at nice 10,
//! and in 0.8 to 1.9 ms under `SCHED_IDLE` (20 rounds each), with no measurable change in
//! registrations per second (`docs/benchmarks.md`). What `SCHED_IDLE` gives up is a floor: were
//! the request threads to keep the core busy by themselves (a flood of cheap requests), hashing
//! would get next to nothing of it rather than about a tenth, and admission, which counts a
//! job's CPU time, would go on admitting jobs that then wait longer than the queue timeout.

/// Puts the calling thread under `SCHED_IDLE`. Elsewhere than Linux there is no such policy
/// for one thread, and this does nothing.
pub(crate) fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        if let Err(error) = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        ) {
            tracing::debug!(%error, "could not lower the priority of a hashing thread");
        }
    }
}
