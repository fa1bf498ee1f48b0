//! One period of leadership as a value: the fence every write of the term
//! carries, the cancellation token that ends it, and every task it spawned
//! (writer, watches, timers, trainer, loaders — nothing detached). Ending the
//! term cancels the token, then awaits the tasks with a deadline and aborts
//! what is left, so no task of an old term outlives it.

use std::future::Future;
use std::time::Duration;

use augur_store::Fence;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

pub(crate) struct Term {
    fence: Fence,
    cancel: CancellationToken,
    tasks: JoinSet<&'static str>,
}

impl Term {
    /// A term fenced by `fence`, ended when `cancel` fires (demotion, lease
    /// loss, shutdown) or when [`Term::end`] is called.
    pub fn new(fence: Fence, cancel: CancellationToken) -> Self {
        Term {
            fence,
            cancel,
            tasks: JoinSet::new(),
        }
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The token that ends the term; tasks select on it.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    #[cfg(test)]
    pub fn is_ended(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Runs `task` as part of the term, under a span named `name`.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let span = tracing::info_span!("leader_task", task = name, epoch = self.fence.epoch());
        self.tasks.spawn(
            async move {
                task.await;
                name
            }
            .instrument(span),
        );
    }

    /// Collects tasks that already finished (loaders, lookups), logging any
    /// that panicked.
    pub fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            match done {
                Ok(name) => debug!(task = name, "leader task done"),
                Err(e) => warn!(error = %e, "leader task failed"),
            }
        }
    }

    /// Number of tasks still running.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.tasks.len()
    }

    /// Ends the term: cancels, awaits every task up to `deadline`, aborts the
    /// rest (and awaits their abortion).
    pub async fn end(mut self, deadline: Duration) {
        self.cancel.cancel();
        let drained = tokio::time::timeout(deadline, async {
            while let Some(done) = self.tasks.join_next().await {
                match done {
                    Ok(name) => debug!(task = name, "leader task stopped"),
                    Err(e) => warn!(error = %e, "leader task ended abnormally"),
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                left = self.tasks.len(),
                "leader tasks still running after the deadline; aborting them"
            );
            self.tasks.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn term() -> Term {
        Term::new(
            Fence::for_epoch(b"test".to_vec(), 7),
            CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn ending_a_term_stops_every_task_including_ones_that_ignore_cancellation() {
        let mut term = term();
        let stopped = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let cancel = term.cancel_token();
            let stopped = stopped.clone();
            term.spawn("polite", async move {
                cancel.cancelled().await;
                stopped.fetch_add(1, Ordering::SeqCst);
            });
        }
        // A task stuck in something that never looks at the token (a long
        // training run awaited without a select) is aborted at the deadline.
        term.spawn("stuck", std::future::pending());
        assert_eq!(term.running(), 4);
        term.end(Duration::from_millis(200)).await;
        assert_eq!(stopped.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn reaping_collects_finished_tasks_only() {
        let mut term = term();
        term.spawn("quick", async {});
        term.spawn("long", std::future::pending());
        for _ in 0..100 {
            tokio::task::yield_now().await;
            term.reap();
            if term.running() == 1 {
                break;
            }
        }
        assert_eq!(term.running(), 1);
        assert!(!term.is_ended());
        term.end(Duration::from_millis(10)).await;
    }
}
