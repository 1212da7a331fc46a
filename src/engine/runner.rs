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
    /// Per row of `logits_indices`: whether the sequence is an embedding request (its
    /// final hidden state is the output, no logits are computed for it).
    pub embeds: Vec<bool>,
}

/// What one step produced, in `logits_indices` order within each kind.
#[derive(Debug, Default)]
pub struct StepRows {
    /// f32 logits of the sequences that sample.
    pub logits: Vec<Vec<f32>>,
    /// f32 final hidden states of the embedding sequences that finished their prompt.
    pub hidden: Vec<Vec<f32>>,
}

impl StepBatch {
    /// `is_embed` tells embedding sequences (pooled, not sampled) from generating ones.
    pub fn build(
        out: &SchedulerOutput,
        sched: &Scheduler,
        kv: &KvCacheManager,
        is_embed: &dyn Fn(crate::kv::SeqId) -> bool,
    ) -> Self {
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
                b.embeds.push(is_embed(s.id));
            }
        }
        b
    }
}

/// Runs a step on the model: logits of the sampling rows and final hidden states of the
/// embedding rows, as host rows.
pub fn execute(
    model: &CausalLm,
    cache: &KvCache,
    batch: StepBatch,
) -> Result<StepRows, RunnerError> {
    let device = model.device();
    let input_ids = Tensor::new(batch.input_ids.as_slice(), device)?;
    let positions = Tensor::new(batch.positions.as_slice(), device)?;
    let logits_indices = Tensor::new(batch.logits_indices.as_slice(), device)?;
    let attention = AttentionMetadata::new(batch.attention, device)?;
    let step = StepInput {
        input_ids: &input_ids,
        positions: &positions,
        attention: &attention,
        logits_indices: &logits_indices,
    };
    if !batch.embeds.contains(&true) {
        // The common case: every output row samples.
        if batch.logits_indices.is_empty() {
            model.forward(&step, cache)?;
            return Ok(StepRows::default());
        }
        return Ok(StepRows {
            logits: model.forward(&step, cache)?.to_vec2::<f32>()?,
            hidden: Vec::new(),
        });
    }
    let hidden = model.forward_hidden(&step, cache)?;
    let rows = |want: bool| -> Result<Tensor, candle_core::Error> {
        let idx: Vec<u32> = (0..batch.embeds.len() as u32)
            .filter(|&i| batch.embeds[i as usize] == want)
            .collect();
        hidden.index_select(&Tensor::new(idx.as_slice(), device)?, 0)
    };
    let sampling = rows(false)?;
    let logits = if sampling.dim(0)? == 0 {
        Vec::new()
    } else {
        model.logits(&sampling)?.to_vec2::<f32>()?
    };
    Ok(StepRows {
        logits,
        hidden: rows(true)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2::<f32>()?,
    })
}
