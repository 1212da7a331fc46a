//! The gated feed-forward block, `down(act(gate(x)) * up(x))`, with gate and up fused into one
//! GEMM (at load time, or already in the checkpoint as Phi-3's `gate_up_proj`, gate rows
//! first): SwiGLU (Llama family, one fused kernel) or GeGLU with the tanh
//! approximation of GELU (Gemma, candle's `gelu`).

use crate::Result;
use crate::linear::Linear;
use crate::weights::WeightSource;
use candle_core::Tensor;
use indus_kernels::silu_mul;
use std::collections::BTreeSet;

/// The gate's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// `gelu_pytorch_tanh`.
    GeluTanh,
}

#[derive(Debug, Clone)]
pub struct GatedMlp {
    gate_up: Linear,
    down: Linear,
    act: Activation,
    intermediate: usize,
}

impl GatedMlp {
    /// From `{prefix}.gate_proj`, `{prefix}.up_proj` (or `fused`: `{prefix}.gate_up_proj`),
    /// `{prefix}.down_proj`.
    pub(crate) fn load(
        src: &WeightSource,
        prefix: &str,
        hidden: usize,
        intermediate: usize,
        act: Activation,
        fused: bool,
    ) -> Result<Self> {
        let gate_up = if fused {
            let name = [format!("{prefix}.gate_up_proj.weight")];
            src.linear(&name, &[2 * intermediate], hidden, None)?
        } else {
            let names = [
                format!("{prefix}.gate_proj.weight"),
                format!("{prefix}.up_proj.weight"),
            ];
            src.linear(&names, &[intermediate, intermediate], hidden, None)?
        };
        let down = src.linear(
            &[format!("{prefix}.down_proj.weight")],
            &[hidden],
            intermediate,
            None,
        )?;
        Ok(Self {
            gate_up,
            down,
            act,
            intermediate,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(x)?;
        let hidden = match self.act {
            Activation::Silu => silu_mul(&gate_up)?,
            Activation::GeluTanh => {
                let last = gate_up.rank() - 1;
                let gate = gate_up.narrow(last, 0, self.intermediate)?;
                let up = gate_up.narrow(last, self.intermediate, self.intermediate)?;
                (gate.gelu()? * up)?
            }
        };
        self.down.forward(&hidden)
    }

    pub fn weight_bytes(&self) -> usize {
        self.gate_up.weight_bytes() + self.down.weight_bytes()
    }

    pub fn quantized_types(&self, out: &mut BTreeSet<String>) {
        self.gate_up.quantized_types(out);
        self.down.quantized_types(out);
    }
}
