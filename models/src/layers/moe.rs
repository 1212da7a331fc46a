//! The sparse mixture-of-experts feed-forward block (Mixtral, Qwen2-MoE, Qwen3-MoE): a linear
//! router on the device, the top-k experts per token ([`indus_kernels::route_top_k`]), the
//! experts' SwiGLU MLPs run grouped by expert ([`indus_kernels::fused_moe`]), and Qwen2-MoE's
//! shared expert behind a sigmoid gate.
//!
//! The experts' weights are stacked at load time — gate and up fused per expert — so the
//! kernel sees one `[experts, 2 * inter, hidden]` and one `[experts, hidden, inter]` tensor.
//! Experts are dense for now: a GGUF file's quantized experts are dequantized at load.

use super::mlp::{Activation, GatedMlp};
use crate::Result;
use crate::config::MoeOptions;
use crate::linear::Linear;
use crate::weights::WeightSource;
use candle_core::Tensor;
use indus_kernels::{ExpertWeights, fused_moe, route_top_k};
use std::collections::BTreeSet;

/// How a family names one expert's projections under the block's prefix.
#[derive(Debug, Clone, Copy)]
pub struct ExpertNames {
    /// The router, e.g. `gate`.
    pub router: &'static str,
    /// `experts.{e}.` + these: gate, up, down.
    pub gate: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

/// Mixtral's `block_sparse_moe.experts.{e}.w1` (gate), `w3` (up), `w2` (down).
pub const MIXTRAL_NAMES: ExpertNames = ExpertNames {
    router: "gate",
    gate: "w1",
    up: "w3",
    down: "w2",
};

/// Qwen-MoE's `mlp.experts.{e}.gate_proj`, `up_proj`, `down_proj`.
pub const QWEN_NAMES: ExpertNames = ExpertNames {
    router: "gate",
    gate: "gate_proj",
    up: "up_proj",
    down: "down_proj",
};

#[derive(Debug, Clone)]
pub struct SparseMoe {
    router: Linear,
    gate_up: Tensor,
    down: Tensor,
    top_k: usize,
    renormalize: bool,
    /// Qwen2-MoE: the shared expert and its `[1, hidden]` gate.
    shared: Option<(GatedMlp, Linear)>,
}

impl SparseMoe {
    pub(crate) fn load(
        src: &WeightSource,
        prefix: &str,
        hidden: usize,
        opts: &MoeOptions,
        names: ExpertNames,
    ) -> Result<Self> {
        let (e, i) = (opts.num_experts, opts.expert_intermediate);
        let router = src.linear(
            &[format!("{prefix}.{}.weight", names.router)],
            &[e],
            hidden,
            None,
        )?;
        let gate = src.stacked_experts(prefix, names.gate, e, [i, hidden])?;
        let up = src.stacked_experts(prefix, names.up, e, [i, hidden])?;
        let gate_up = Tensor::cat(&[&gate, &up], 1)?;
        let down = src.stacked_experts(prefix, names.down, e, [hidden, i])?;
        let shared = match opts.shared_expert_intermediate {
            Some(s) => Some((
                GatedMlp::load(
                    src,
                    &format!("{prefix}.shared_expert"),
                    hidden,
                    s,
                    Activation::Silu,
                    false,
                )?,
                src.linear(
                    &[format!("{prefix}.shared_expert_gate.weight")],
                    &[1],
                    hidden,
                    None,
                )?,
            )),
            None => None,
        };
        Ok(Self {
            router,
            gate_up,
            down,
            top_k: opts.top_k,
            renormalize: opts.renormalize,
            shared,
        })
    }

    /// `x`: `[tokens, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (ids, weights) = route_top_k(&self.router.forward(x)?, self.top_k, self.renormalize)?;
        let experts = ExpertWeights {
            gate_up: &self.gate_up,
            down: &self.down,
        };
        let out = fused_moe(x, &ids, &weights, &experts)?;
        Ok(match &self.shared {
            None => out,
            Some((mlp, gate)) => {
                let g = sigmoid(&gate.forward(x)?)?;
                (out + mlp.forward(x)?.broadcast_mul(&g)?)?
            }
        })
    }

    pub fn weight_bytes(&self) -> usize {
        let dense = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let shared = self
            .shared
            .as_ref()
            .map_or(0, |(m, g)| m.weight_bytes() + g.weight_bytes());
        self.router.weight_bytes() + dense(&self.gate_up) + dense(&self.down) + shared
    }

    pub fn quantized_types(&self, out: &mut BTreeSet<String>) {
        self.router.quantized_types(out);
        if let Some((m, g)) = &self.shared {
            m.quantized_types(out);
            g.quantized_types(out);
        }
    }
}

/// `1 / (1 + e^-x)`, in the input's dtype.
fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    let one = x.ones_like()?;
    one.broadcast_div(&(x.neg()?.exp()? + 1.0)?)
}
