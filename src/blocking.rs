//! Blocking work (argon2) on tokio's blocking pool, admitted by a semaphore
//! permit.

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinError;

/// Runs `work` on the blocking pool while `permit` is held.
///
/// The permit travels back with the result and is released by the awaiting
/// task. Released at the end of the closure instead, the next waiter would
/// hand its work to the blocking pool while this thread is still on its way
/// back to the idle ones, and tokio would start a new thread for it: under a
/// flood of 200 logins that grew the pool to about 200 threads. If the caller
/// is gone, the permit is dropped with the result, after the work.
pub async fn run<T: Send + 'static>(
    permit: OwnedSemaphorePermit,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JoinError> {
    let (result, _permit) = tokio::task::spawn_blocking(move || (work(), permit)).await?;
    Ok(result)
}
