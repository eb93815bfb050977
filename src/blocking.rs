//! Threads of their own for blocking CPU work (argon2), at a lower CPU
//! priority than the rest of the process.
//!
//! A password flood keeps every hashing thread busy. On tokio's blocking
//! pool those threads competed with the async workers and PostgreSQL as
//! equals, and a refresh grant, which wakes a worker at every round trip,
//! waited behind them for a time slice at each wake-up (R8 in
//! `docs/PERFORMANCE.md`). Here they run with a nice value of
//! [`NICE`]: the scheduler still gives them every cycle nobody else wants,
//! so a flood hashes as fast as before on an otherwise idle machine, but
//! a worker with a grant to answer comes first. A fixed number of threads
//! also means a flood cannot grow the thread count (the permits in front
//! of them bound the queue).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

/// How much nicer than the process the hashing threads are (Linux, per
/// thread; 19 is the lowest priority). 10 steps down, a busy hashing thread
/// gets about a tenth of the CPU time a normal thread wanting the same CPU
/// gets.
pub const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of low-priority threads taking jobs from one queue.
#[derive(Debug)]
pub struct Threads {
    jobs: mpsc::Sender<Job>,
}

/// The job's thread went away before it answered (it cannot, unless the
/// process is going down).
#[derive(Debug, thiserror::Error)]
#[error("the work was dropped before it finished")]
pub struct Dropped;

impl Threads {
    /// Starts `count` threads named `{name}-{i}`. They end once this value
    /// is dropped and their queue is empty.
    pub fn start(name: &str, count: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..count.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                lower_priority();
                loop {
                    // The lock is held only while waiting for the next job.
                    let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok(job) = job else { return };
                    // A panicking job fails its own caller (its answer is
                    // dropped), not the thread.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on one of the threads and waits for it as a future.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Dropped> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(work());
        });
        self.jobs.send(job).map_err(|_| Dropped)?;
        answered.await.map_err(|_| Dropped)
    }
}

/// Lowers the calling thread's CPU priority by [`NICE`] below the
/// process's (at most to 19, the lowest). On Linux a nice value belongs to
/// the thread, and `who = 0` names the calling one; elsewhere it would be
/// the whole process's, so nothing is changed there. A failure leaves the
/// thread at normal priority, which is only slower to yield.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let lowered = getpriority_process(None).and_then(|own| setpriority_process(None, (own + NICE).min(19)));
        if let Err(error) = lowered {
            tracing::warn!(%error, "could not lower the hashing thread's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_a_named_thread_and_a_panic_fails_only_its_own_caller() {
        let threads = Threads::start("test-hash", 1).expect("threads");
        let name = threads.run(|| std::thread::current().name().map(str::to_owned)).await.expect("answer");
        assert_eq!(name.as_deref(), Some("test-hash-0"));
        let panicked = threads.run(|| -> u32 { panic!("boom") }).await;
        assert!(panicked.is_err(), "a panicking job answers Dropped");
        assert_eq!(threads.run(|| 7).await.expect("the thread lives on"), 7);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_threads_run_at_a_lower_priority_than_the_rest() {
        let own = || rustix::process::getpriority_process(None).expect("nice value");
        let before = own();
        let threads = Threads::start("test-nice", 1).expect("threads");
        let nice = threads.run(own).await.expect("answer");
        assert_eq!(nice, (before + NICE).min(19));
        assert_eq!(own(), before, "the rest of the process is untouched");
    }
}
