//! Turns a scheduled batch into the model's step tensors (input ids, positions, slot
//! mapping, block tables, context lengths, query offsets) and runs the forward pass.

use crate::kv::KvCacheManager;
use crate::scheduler::{Scheduler, SchedulerOutput};
use candle_core::Tensor;
use indus_kernels::AttentionMetadata;
use indus_kernels::metadata::HostAttentionMetadata;
use indus_models::{CausalLm, KvCache, StepInput};

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("forward pass failed: {0}")]
    Model(#[from] indus_models::ModelError),
    #[error("forward pass failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The host-side description of one step, built before any tensor exists (unit-testable).
#[derive(Debug, Default, Clone)]
pub struct StepBatch {
    pub input_ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub attention: HostAttentionMetadata,
    /// Flat-batch rows whose logits are sampled, in `SchedulerOutput::seqs` order of the
    /// sequences with `samples` set.
    pub logits_indices: Vec<u32>,
}

impl StepBatch {
    pub fn build(out: &SchedulerOutput, sched: &Scheduler, kv: &KvCacheManager) -> Self {
        let bs = kv.block_size();
        let mut b = StepBatch::default();
        let max_blocks = out
            .seqs
            .iter()
            .map(|s| (s.num_computed + s.num_new).div_ceil(bs))
            .max()
            .unwrap_or(0);
        b.attention.max_blocks_per_seq = max_blocks;
        b.attention.query_start_loc.push(0);
        for s in &out.seqs {
            let seq = sched.get(s.id).expect("scheduled sequence exists");
            let table = kv.block_table(s.id);
            for pos in s.num_computed..s.num_computed + s.num_new {
                b.input_ids.push(seq.tokens[pos]);
                b.positions.push(pos as u32);
                let slot = table[pos / bs] as usize * bs + pos % bs;
                b.attention.slot_mapping.push(slot as i64);
            }
            let ctx = s.num_computed + s.num_new;
            let used = ctx.div_ceil(bs);
            b.attention.block_tables.extend_from_slice(&table[..used]);
            b.attention
                .block_tables
                .extend(std::iter::repeat_n(0, max_blocks - used));
            b.attention.context_lens.push(ctx as u32);
            b.attention.query_start_loc.push(b.input_ids.len() as u32);
            if s.samples {
                b.logits_indices.push(b.input_ids.len() as u32 - 1);
            }
        }
        b
    }
}

/// Runs a step on the model; returns f32 logits `[num_sampled, vocab]` as host rows.
pub fn execute(
    model: &CausalLm,
    cache: &KvCache,
    batch: StepBatch,
) -> Result<Vec<Vec<f32>>, RunnerError> {
    let device = model.device();
    let input_ids = Tensor::new(batch.input_ids.as_slice(), device)?;
    let positions = Tensor::new(batch.positions.as_slice(), device)?;
    let logits_indices = Tensor::new(batch.logits_indices.as_slice(), device)?;
    let attention = AttentionMetadata::new(batch.attention, device)?;
    let logits = model.forward(
        &StepInput {
            input_ids: &input_ids,
            positions: &positions,
            attention: &attention,
            logits_indices: &logits_indices,
        },
        cache,
    )?;
    if batch.logits_indices.is_empty() {
        return Ok(Vec::new());
    }
    Ok(logits.to_vec2::<f32>()?)
}
