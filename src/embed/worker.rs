//! The batching worker of one encoder model: its own OS thread (and its own compute
//! threads), so embedding traffic never runs on the chat engine's thread. Waiting inputs
//! are gathered, sorted by length (little padding) and cut into batches of at most
//! `max_batch_tokens` padded tokens, as TEI batches.

use indus_models::encoder::{EncoderInput, PoolingModel};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::oneshot;

/// One client request: its inputs and where the outputs go (in input order).
pub(crate) struct Job {
    pub inputs: Vec<EncoderInput>,
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
}

impl Job {
    fn tokens(&self) -> usize {
        self.inputs.iter().map(|i| i.ids.len()).sum()
    }
}

/// Counters the worker keeps for /metrics.
#[derive(Default)]
pub struct WorkerStats {
    pub batches: AtomicU64,
    pub inputs: AtomicU64,
    /// Padded tokens run (batch × longest input), to show how much padding costs.
    pub padded_tokens: AtomicU64,
    pub tokens: AtomicU64,
    pub busy_micros: AtomicU64,
}

pub(crate) struct Worker {
    pub model: PoolingModel,
    pub max_batch_tokens: usize,
    pub stats: Arc<WorkerStats>,
    pub alive: Arc<AtomicBool>,
}

impl Worker {
    /// Runs until every sender is gone.
    pub fn run(self, rx: crossbeam_channel::Receiver<Job>) {
        // Gather up to a few batches' worth before sorting, so a long queue is cut into
        // well-packed batches without holding any job behind an unbounded window.
        let window = self.max_batch_tokens.saturating_mul(4);
        while let Ok(first) = rx.recv() {
            let mut tokens = first.tokens();
            let mut jobs = vec![first];
            while tokens < window {
                match rx.try_recv() {
                    Ok(j) => {
                        tokens += j.tokens();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            self.process(jobs);
        }
        self.alive.store(false, Ordering::SeqCst);
    }

    fn process(&self, jobs: Vec<Job>) {
        // A client that went away is not computed for.
        let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
        let mut outputs: Vec<Vec<Option<Vec<f32>>>> =
            jobs.iter().map(|j| vec![None; j.inputs.len()]).collect();
        let mut failed: Vec<Option<String>> = vec![None; jobs.len()];
        let mut items: Vec<(usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, job)| (0..job.inputs.len()).map(move |i| (j, i)))
            .collect();
        let len = |&(j, i): &(usize, usize)| jobs[j].inputs[i].ids.len();
        // Longest first: each batch's first item sets its padded length.
        items.sort_by_key(|it| std::cmp::Reverse(len(it)));
        for batch in cut_batches(&items, self.max_batch_tokens, len) {
            let inputs: Vec<EncoderInput> = batch
                .iter()
                .map(|&(j, i)| jobs[j].inputs[i].clone())
                .collect();
            let started = Instant::now();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if self.model.is_classifier() {
                    self.model.classify(&inputs)
                } else {
                    self.model.embed(&inputs)
                }
            }));
            self.account(&inputs, started);
            match result {
                Ok(Ok(rows)) => {
                    for (&(j, i), row) in batch.iter().zip(rows) {
                        outputs[j][i] = Some(row);
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "encoder batch failed");
                    for &(j, _) in batch {
                        failed[j] = Some(e.to_string());
                    }
                }
                Err(_) => {
                    tracing::error!("encoder batch panicked");
                    for &(j, _) in batch {
                        failed[j] = Some("the encoder failed on this batch".into());
                    }
                }
            }
        }
        for ((job, out), fail) in jobs.into_iter().zip(outputs).zip(failed) {
            let result = match fail {
                Some(e) => Err(e),
                None => Ok(out.into_iter().map(Option::unwrap_or_default).collect()),
            };
            let _ = job.reply.send(result);
        }
    }

    fn account(&self, inputs: &[EncoderInput], started: Instant) {
        let longest = inputs.iter().map(|i| i.ids.len()).max().unwrap_or(0);
        let s = &self.stats;
        s.batches.fetch_add(1, Ordering::Relaxed);
        s.inputs.fetch_add(inputs.len() as u64, Ordering::Relaxed);
        s.tokens.fetch_add(
            inputs.iter().map(|i| i.ids.len() as u64).sum(),
            Ordering::Relaxed,
        );
        s.padded_tokens
            .fetch_add((longest * inputs.len()) as u64, Ordering::Relaxed);
        s.busy_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// Splits length-sorted (longest first) items into batches of at most `budget` padded
/// tokens; an item longer than the budget is a batch of its own.
fn cut_batches<T>(items: &[T], budget: usize, len: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let longest = len(&items[start]).max(1);
        let fit = (budget / longest).max(1);
        let end = (start + fit).min(items.len());
        batches.push(&items[start..end]);
        start = end;
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::cut_batches;

    #[test]
    fn batches_respect_the_padded_token_budget() {
        let lens = [300, 100, 100, 90, 50, 50, 50, 10, 1];
        let batches = cut_batches(&lens, 200, |&l| l);
        let shapes: Vec<Vec<usize>> = batches.iter().map(|b| b.to_vec()).collect();
        assert_eq!(
            shapes,
            vec![vec![300], vec![100, 100], vec![90, 50], vec![50, 50, 10, 1]]
        );
        for b in &batches {
            assert!(b.len() == 1 || b[0] * b.len() <= 200);
        }
    }
}
