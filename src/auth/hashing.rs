//! The password-hashing pool: a few threads that run argon2, each reusing its own memory.
//!
//! Why not `spawn_blocking`: every argon2id call needs a 19 MiB block of memory. On tokio's
//! blocking pool (up to 512 threads) a burst of logins ran as many hashes at once as there
//! were requests, each thread keeping its own glibc arena (RSS 20 MB → 613 MB after 50
//! registrations, never returned). Here at most `workers` hashes run (one per core), each
//! worker allocates its block once, and at most `queue` requests wait; anything beyond is
//! refused at once with 503 and `Retry-After` instead of piling up.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use argon2::{Argon2, Block};
use tokio::sync::{Semaphore, oneshot};

use crate::auth::password;
use crate::error::{ApiError, ApiResult};

/// Seconds a refused request is told to wait: a hash takes tens of milliseconds.
const BUSY_RETRY_AFTER: u64 = 1;

/// A job gets the worker's memory blocks (at least the default argon2 parameters' worth).
type Job = Box<dyn FnOnce(&mut [Block]) + Send>;

pub struct HashPool {
    jobs: SyncSender<Job>,
    /// One permit per job running or waiting (`workers + queue`): taken before a job is
    /// handed over, given back when it has run.
    admitted: Arc<Semaphore>,
    /// Worker threads, and permits in all (`workers + queue`): what `load` reads against.
    workers: usize,
    capacity: usize,
}

impl HashPool {
    /// `workers` threads (at least 1) and up to `queue` requests waiting for one.
    pub fn new(workers: usize, queue: usize) -> Self {
        let capacity = workers.max(1) + queue;
        let (jobs, rx) = sync_channel::<Job>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let spawned =
                std::thread::Builder::new().name(format!("palaver-argon2-{i}")).spawn(move || work(&rx));
            if let Err(err) = spawned {
                tracing::error!(error = %err, "could not start a password-hashing thread");
            }
        }
        Self { jobs, admitted: Arc::new(Semaphore::new(capacity)), workers: workers.max(1), capacity }
    }

    /// (hashes running, hashes waiting for a worker) now (metrics).
    pub fn load(&self) -> (usize, usize) {
        let admitted = self.capacity.saturating_sub(self.admitted.available_permits());
        let running = admitted.min(self.workers);
        (running, admitted - running)
    }

    /// The default: one worker per core, twice as many waiting.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
    }

    /// Runs `f` on a worker; 503 at once when every worker is busy and the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    ) -> ApiResult<T> {
        let busy = || ApiError::Busy { retry_after: BUSY_RETRY_AFTER };
        let permit = self.admitted.clone().try_acquire_owned().map_err(|_| busy())?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |blocks| {
            let result = f(blocks);
            // Free before answering: the caller may hash again right away.
            drop(permit);
            let _ = tx.send(result);
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            // Cannot happen (the channel holds as many jobs as there are permits).
            Err(TrySendError::Full(_)) => return Err(busy()),
            Err(TrySendError::Disconnected(_)) => return Err(ApiError::internal("password hashing stopped")),
        }
        rx.await.map_err(|_| ApiError::internal("password hashing job failed"))
    }

    /// A new argon2id PHC string for `password`.
    pub async fn hash(&self, password: String) -> ApiResult<String> {
        self.run(move |blocks| password::hash_with_memory(&password, blocks)).await?
    }

    /// Whether `password` matches the stored PHC string (an unreadable one never matches).
    pub async fn verify(&self, password: String, stored: String) -> ApiResult<bool> {
        self.run(move |blocks| password::verify_with_memory(&password, &stored, blocks)).await
    }
}

/// One worker: takes jobs until the pool is dropped. Its memory is allocated on the first
/// job and reused for every later one.
fn work(rx: &Mutex<Receiver<Job>>) {
    let mut blocks: Vec<Block> = Vec::new();
    loop {
        // The lock is held only while waiting for the next job, not while hashing.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if blocks.is_empty() {
            blocks = vec![Block::default(); default_block_count()];
        }
        // A panicking job must not take the worker with it (its caller sees the error).
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(blocks.as_mut_slice())));
    }
}

/// Blocks the default argon2 parameters need (19 MiB of 1 KiB blocks).
pub fn default_block_count() -> usize {
    Argon2::default().params().block_count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verifies_and_refuses_beyond_the_queue() {
        let pool = Arc::new(HashPool::new(1, 0));
        let hash = pool.hash("Secret-Passw0rd".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(pool.verify("Secret-Passw0rd".into(), hash.clone()).await.unwrap());
        assert!(!pool.verify("secret-Passw0rd".into(), hash.clone()).await.unwrap());
        assert!(!pool.verify("x".into(), "not a hash".into()).await.unwrap());

        // A worker busy with one job and no queue: the next job is refused, not queued.
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel();
        let busy_pool = pool.clone();
        let busy = tokio::spawn(async move {
            busy_pool
                .run(move |_| {
                    let _ = started_tx.send(());
                    let _ = hold_rx.recv();
                })
                .await
        });
        let _ = started_rx.await;
        let refused = pool.hash("Secret-Passw0rd".into()).await.unwrap_err();
        assert!(matches!(refused, ApiError::Busy { retry_after: 1 }), "{refused:?}");
        hold_tx.send(()).unwrap();
        busy.await.unwrap().unwrap();
        // Its permit is back once the job has run.
        let mut again = pool.verify("Secret-Passw0rd".into(), hash.clone()).await;
        for _ in 0..100 {
            if !matches!(again, Err(ApiError::Busy { .. })) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            again = pool.verify("Secret-Passw0rd".into(), hash.clone()).await;
        }
        assert!(again.unwrap());

        // With a queue, jobs beyond the running one wait instead of being refused.
        let pool = Arc::new(HashPool::new(1, 2));
        let waiting = (0..3).map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.hash("Secret-Passw0rd".into()).await })
        });
        for job in waiting.collect::<Vec<_>>() {
            assert!(job.await.unwrap().is_ok());
        }
    }
}
