//! The checks of `indus-gpu-check`, on any device: each op on `dev` in its storage dtype against the CPU reference in
//! f32 on the same (dtype-rounded) inputs, compared as a whole and row by row ([`super::metrics::compare`]).
//!
//! Before each out-of-place op on a GPU the memory pool is filled with all-ones bytes (NaN in f32, bf16 and f16
//! alike) and freed, so an output element a kernel forgets to write reads as NaN; every KV-cache slot outside the
//! sequences' contexts is NaN, so a kernel reading past a context poisons its output. Two controls check that
//! the poison really reaches the outputs: fresh allocations after poisoning must read NaN, and an attention call
//! told to read one key past a context must come out NaN exactly where the reference does.

use super::inputs::{
    AttentionInputs, Int4Inputs, SamplingKind, ScoreRegime, SeqSpec, norm_rows,
    sample_reference_parallel, sampling_rows,
};
use super::metrics::{CheckResult, Rng, compare, mismatches_exact, nan_mask_mismatches, tolerance};
use crate::fma_exp::{exp_fma, exp_fma_tensor, exp_test_inputs};
use crate::metadata::{AttentionMetadata, HostAttentionMetadata};
use crate::paged_attention::{
    AttentionVariant, DecodeSplit, PagedAttentionOptions, paged_attention_variant_with,
    paged_attention_with,
};
use crate::sampling;
use candle_core::{DType, Device, Result, Tensor};

/// How much of the suite to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Small shapes of every check: the CPU self-test in `cargo test` (seconds in a debug build).
    Tiny,
    /// A subset of the full shapes (`--quick`).
    Quick,
    /// Everything (the default of `indus-gpu-check`).
    Full,
}

#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub scale: Scale,
    pub seed: u64,
}

/// Every check on `dev`; `on_result` sees each result as it is recorded (the binary prints failures at once). An
/// error inside a check (a launch failure, an unsupported shape) is recorded as that check's failure and the rest
/// still run.
pub fn run(
    dev: &Device,
    opts: &SuiteOptions,
    on_result: &mut dyn FnMut(&CheckResult),
) -> Vec<CheckResult> {
    let mut s = Suite {
        dev,
        scale: opts.scale,
        rng: Rng::new(opts.seed),
        seed: opts.seed,
        results: Vec::new(),
        on_result,
    };
    s.guarded("poison control", DType::U32, Suite::poison_probe);
    s.guarded("fma_exp", DType::F32, Suite::check_fma_exp);
    let dtypes: &[DType] = match opts.scale {
        Scale::Quick => &[DType::BF16, DType::F32],
        _ => &[DType::BF16, DType::F16, DType::F32],
    };
    for &dt in dtypes {
        s.guarded("write_kv_cache", dt, |s| s.check_cache_write(dt));
        s.guarded("rms_norm", dt, |s| s.check_norms(dt));
        s.guarded("rotary", dt, |s| s.check_rotary(dt));
        s.guarded("silu_mul", dt, |s| s.check_silu(dt));
        s.guarded("fused_moe", dt, |s| s.check_moe(dt));
        s.guarded("int4_matmul", dt, |s| s.check_int4(dt));
        s.guarded("paged_attention", dt, |s| s.check_attention(dt));
        s.guarded("paged_attention (window, soft-cap)", dt, |s| {
            s.check_attention_variants(dt)
        });
        s.guarded("poison control", dt, |s| s.attention_over_read_control(dt));
    }
    s.guarded("metadata validation", DType::F32, Suite::check_validation);
    s.guarded("sample", DType::F32, Suite::check_sampling);
    s.results
}

struct Suite<'a> {
    dev: &'a Device,
    scale: Scale,
    rng: Rng,
    seed: u64,
    results: Vec<CheckResult>,
    on_result: &'a mut dyn FnMut(&CheckResult),
}

fn to_dev(host: &[f32], shape: &[usize], dt: DType, dev: &Device) -> Result<Tensor> {
    Tensor::from_slice(host, shape, &Device::Cpu)?
        .to_dtype(dt)?
        .to_device(dev)
}

fn cpu_of(host: &[f32], shape: &[usize], dt: DType) -> Result<Tensor> {
    Tensor::from_slice(host, shape, &Device::Cpu)?.to_dtype(dt)
}

/// `host` rounded through `dt` and back to f32, as a CPU f32 tensor: the reference's input.
fn rounded(host: &[f32], shape: &[usize], dt: DType) -> Result<Tensor> {
    cpu_of(host, shape, dt)?.to_dtype(DType::F32)
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()
}

/// Fills the device's memory pool with all-ones bytes and frees it, so the next allocations (the ops' outputs)
/// start out as NaN in every float dtype. A no-op on the CPU, whose allocations are zeroed.
fn poison_pool(dev: &Device, bytes: usize) -> Result<()> {
    if dev.is_cuda() {
        drop(Tensor::full(u32::MAX, bytes / 4, dev)?);
    }
    Ok(())
}

fn attention_options(decode_only: bool) -> Vec<(&'static str, PagedAttentionOptions)> {
    let mut v = vec![("auto", PagedAttentionOptions::default())];
    if decode_only {
        v.push((
            "split off",
            PagedAttentionOptions {
                decode_split: DecodeSplit::Off,
                ..Default::default()
            },
        ));
        v.push((
            "split 256",
            PagedAttentionOptions {
                decode_split: DecodeSplit::Partition(256),
                ..Default::default()
            },
        ));
    } else {
        v.push((
            "general kernel",
            PagedAttentionOptions {
                general_kernel_only: true,
                ..Default::default()
            },
        ));
    }
    v
}

impl Suite<'_> {
    fn push(&mut self, r: CheckResult) {
        (self.on_result)(&r);
        self.results.push(r);
    }

    fn guarded(&mut self, name: &str, dt: DType, f: impl FnOnce(&mut Self) -> Result<()>) {
        if let Err(e) = f(self) {
            self.push(CheckResult::errored(name, dt, &e.to_string()));
        }
    }

    fn compared(
        &mut self,
        name: &str,
        dt: DType,
        detail: String,
        got: &[f32],
        want: &[f32],
        row: usize,
    ) {
        let c = compare(got, want, row);
        self.push(CheckResult::compared(name, dt, detail, &c, tolerance(dt)));
    }

    fn pick<T: Clone>(&self, tiny: &[T], quick: &[T], full: &[T]) -> Vec<T> {
        match self.scale {
            Scale::Tiny => tiny.to_vec(),
            Scale::Quick => quick.to_vec(),
            Scale::Full => full.to_vec(),
        }
    }

    // ------------------------------------------------------------------------------------------ poison controls

    /// Fresh allocations right after [`poison_pool`] must read as all-ones: otherwise an output element a kernel
    /// forgets to write would go unnoticed (CUDA only).
    fn poison_probe(&mut self) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(cuda) = self.dev {
            for bytes in [256usize, 1 << 20, 32 << 20] {
                poison_pool(self.dev, 256 << 20)?;
                let words = bytes / 4;
                // SAFETY: the buffer is only read back, as plain bits; nothing interprets it as initialised data.
                let buf = unsafe { cuda.alloc::<u32>(words) }?;
                let host = cuda.clone_dtoh(&buf)?;
                let clean = host.iter().filter(|&&w| w != u32::MAX).count();
                self.push(CheckResult::exact(
                    "poison control (fresh allocations read NaN)",
                    DType::U32,
                    format!("{bytes} bytes after poisoning the pool: {clean} words not poisoned"),
                    clean,
                ));
            }
        }
        Ok(())
    }

    /// Attention told that two sequences have one more token than was written (a decode row and a prompt chunk)
    /// reads one poisoned slot each: the output must be NaN exactly where the reference's is -- proof that a kernel
    /// reading past a context would be caught.
    fn attention_over_read_control(&mut self, dt: DType) -> Result<()> {
        let seqs = [
            SeqSpec::decode(50),
            SeqSpec::prefill(20),
            SeqSpec::decode(33),
            SeqSpec::chunk(90, 33),
        ];
        let dims = match self.scale {
            Scale::Tiny => (4, 2, 64),
            _ => (32, 8, 128),
        };
        let inp = AttentionInputs::new(&seqs, 16, dims, ScoreRegime::Random, &mut self.rng);
        let mut wrong: HostAttentionMetadata = inp.case.meta.clone();
        wrong.context_lens[0] += 1;
        wrong.context_lens[3] += 1;
        let (want, got) = self.attention_pair(
            &inp,
            &wrong,
            dt,
            AttentionVariant::default(),
            PagedAttentionOptions::default(),
        )?;
        let poisoned = want.iter().filter(|x| x.is_nan()).count();
        let mismatched = nan_mask_mismatches(&got, &want);
        self.push(CheckResult::exact(
            "poison control (attention over-read)",
            dt,
            format!(
                "contexts 50 and 90 read one key too far: {poisoned} NaN outputs expected, {} found, {mismatched} misplaced",
                got.iter().filter(|x| x.is_nan()).count()
            ),
            mismatched + usize::from(poisoned == 0),
        ));
        Ok(())
    }

    /// The reference (f32 on the rounded inputs, CPU) and the device output of one attention call with `meta`.
    fn attention_pair(
        &mut self,
        inp: &AttentionInputs,
        meta: &HostAttentionMetadata,
        dt: DType,
        variant: AttentionVariant,
        o: PagedAttentionOptions,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let (qd, cd) = (inp.q_dims(), inp.cache_dims());
        let want = {
            let m = AttentionMetadata::new(meta.clone(), &Device::Cpu)?;
            let (q, k, v) = (
                rounded(&inp.q, &qd, dt)?,
                rounded(&inp.k, &cd, dt)?,
                rounded(&inp.v, &cd, dt)?,
            );
            flat(&paged_attention_variant_with(
                &q,
                &k,
                &v,
                &m,
                inp.scale,
                variant,
                Default::default(),
            )?)?
        };
        let got = self.attention_on_device(inp, meta, dt, variant, o)?;
        Ok((want, got))
    }

    fn attention_on_device(
        &mut self,
        inp: &AttentionInputs,
        meta: &HostAttentionMetadata,
        dt: DType,
        variant: AttentionVariant,
        o: PagedAttentionOptions,
    ) -> Result<Vec<f32>> {
        let (qd, cd) = (inp.q_dims(), inp.cache_dims());
        let q = to_dev(&inp.q, &qd, dt, self.dev)?;
        let k = to_dev(&inp.k, &cd, dt, self.dev)?;
        let v = to_dev(&inp.v, &cd, dt, self.dev)?;
        let m = AttentionMetadata::new(meta.clone(), self.dev)?;
        poison_pool(self.dev, 256 << 20)?;
        flat(&paged_attention_variant_with(
            &q, &k, &v, &m, inp.scale, variant, o,
        )?)
    }

    // ------------------------------------------------------------------------------------------ the exp

    fn check_fma_exp(&mut self) -> Result<()> {
        let n = if self.scale == Scale::Tiny {
            10_000
        } else {
            1_000_000
        };
        let x = exp_test_inputs(n, self.seed);
        let t = Tensor::from_slice(&x, n, self.dev)?;
        let got: Vec<f32> = exp_fma_tensor(&t)?.to_device(&Device::Cpu)?.to_vec1()?;
        let bad: Vec<usize> = (0..n)
            .filter(|&i| got[i].to_bits() != exp_fma(x[i]).to_bits())
            .collect();
        let example = bad
            .first()
            .map(|&i| {
                format!(
                    "; e.g. exp({:e}) = {:e} here, {:e} on the host",
                    x[i],
                    got[i],
                    exp_fma(x[i])
                )
            })
            .unwrap_or_default();
        self.push(CheckResult::exact(
            "fma_exp (device bits = host bits)",
            DType::F32,
            format!("{n} inputs: {} differ{example}", bad.len()),
            bad.len(),
        ));
        Ok(())
    }

    // ------------------------------------------------------------------------------------------ small ops

    fn check_cache_write(&mut self, dt: DType) -> Result<()> {
        // (head size, kv heads, tokens, block size): vector and scalar paths (head sizes not a multiple of 8),
        // block sizes other than 16.
        let cases: Vec<(usize, usize, usize, usize)> = self.pick(
            &[(64, 1, 3, 16), (10, 3, 5, 5), (36, 2, 9, 8)],
            &[
                (128, 8, 37, 16),
                (128, 2, 16, 8),
                (10, 3, 13, 5),
                (36, 2, 9, 32),
            ],
            &[
                (64, 1, 1, 16),
                (128, 8, 37, 16),
                (128, 2, 16, 16),
                (256, 4, 5, 16),
                (128, 8, 21, 8),
                (64, 2, 40, 32),
                (10, 3, 13, 5),
                (36, 2, 9, 16),
                (20, 1, 7, 1),
            ],
        );
        for (hs, kvh, tokens, bs) in cases {
            let blocks = (tokens + 8).div_ceil(bs) + 2;
            let cache0: Vec<f32> = vec![f32::NAN; blocks * kvh * bs * hs];
            let new = self.rng.normals(tokens * kvh * hs, 1.0);
            let mut slots: Vec<usize> = (0..blocks * bs).collect();
            self.rng.shuffle(&mut slots);
            let slots: Vec<i64> = (0..tokens)
                .map(|t| if t % 5 == 3 { -1 } else { slots[t] as i64 })
                .collect();
            let dims = [blocks, kvh, bs, hs];
            let cpu_cache = cpu_of(&cache0, &dims, dt)?;
            let slots_cpu = Tensor::new(slots.as_slice(), &Device::Cpu)?;
            crate::write_kv_cache(
                &cpu_cache,
                &cpu_of(&new, &[tokens, kvh, hs], dt)?,
                &slots_cpu,
            )?;
            let dev_cache = to_dev(&cache0, &dims, dt, self.dev)?;
            let dev_new = to_dev(&new, &[tokens, kvh, hs], dt, self.dev)?;
            // i64 slots go to the kernel as they are; other integer dtypes are converted by the wrapper.
            let slots_dev = if hs == 128 {
                slots_cpu.to_dtype(DType::I32)?.to_device(self.dev)?
            } else {
                slots_cpu.to_device(self.dev)?
            };
            crate::write_kv_cache(&dev_cache, &dev_new, &slots_dev)?;
            let (got, want) = (flat(&dev_cache)?, flat(&cpu_cache)?);
            let vec = hs.is_multiple_of(16 / dt.size_in_bytes());
            self.push(CheckResult::exact(
                "write_kv_cache",
                dt,
                format!(
                    "hs {hs} kvh {kvh} tokens {tokens} block {bs} ({} path; exact; mismatches)",
                    if vec { "vector" } else { "scalar" }
                ),
                mismatches_exact(&got, &want),
            ));
        }
        Ok(())
    }

    fn check_norms(&mut self, dt: DType) -> Result<()> {
        // Rows cycle through magnitudes 1, 1e-2, 3e-3, 1e-3, 3e-4, 10 (a dropped eps fails the small ones); widths
        // that are not multiples of 8 take the scalar path.
        let cases: Vec<(usize, usize)> = self.pick(
            &[(6, 64), (6, 13), (2, 8)],
            &[(7, 4096), (12, 1001), (6, 13), (2, 8)],
            &[
                (1, 4096),
                (7, 4096),
                (64, 5120),
                (3, 1000),
                (2, 8),
                (12, 1001),
                (6, 4099),
                (6, 13),
                (5, 7),
            ],
        );
        for (i, (rows, dim)) in cases.into_iter().enumerate() {
            let eps = if i % 2 == 0 { 1e-5 } else { 1e-6 };
            let x = norm_rows(rows, dim, &mut self.rng);
            let r = norm_rows(rows, dim, &mut self.rng);
            let w: Vec<f32> = (0..dim).map(|_| 1.0 + 0.1 * self.rng.normal()).collect();
            let shape = [rows, dim];
            let detail = format!("{rows}x{dim}, eps {eps:e}, rows of 1 down to 3e-4");
            let want = flat(&crate::rms_norm(
                &rounded(&x, &shape, dt)?,
                &rounded(&w, &[dim], dt)?,
                eps,
            )?)?;
            poison_pool(self.dev, 64 << 20)?;
            let got = crate::rms_norm(
                &to_dev(&x, &shape, dt, self.dev)?,
                &to_dev(&w, &[dim], dt, self.dev)?,
                eps,
            )?;
            self.compared("rms_norm", dt, detail.clone(), &flat(&got)?, &want, dim);

            // The fused op: the sum rounded to dt (as the unfused pair rounds it), then normed in f32.
            let sum = (cpu_of(&x, &shape, dt)? + cpu_of(&r, &shape, dt)?)?;
            let want_sum = flat(&sum)?;
            let want_normed = flat(&crate::rms_norm(
                &sum.to_dtype(DType::F32)?,
                &rounded(&w, &[dim], dt)?,
                eps,
            )?)?;
            poison_pool(self.dev, 64 << 20)?;
            let (gn, gs) = crate::fused_add_rms_norm(
                &to_dev(&x, &shape, dt, self.dev)?,
                &to_dev(&r, &shape, dt, self.dev)?,
                &to_dev(&w, &[dim], dt, self.dev)?,
                eps,
            )?;
            self.compared(
                "fused_add_rms_norm.normed",
                dt,
                detail.clone(),
                &flat(&gn)?,
                &want_normed,
                dim,
            );
            let gs = flat(&gs)?;
            self.push(CheckResult::exact(
                "fused_add_rms_norm.residual",
                dt,
                format!("{detail} (exact; mismatches)"),
                mismatches_exact(&gs, &want_sum),
            ));
        }
        Ok(())
    }

    fn check_rotary(&mut self, dt: DType) -> Result<()> {
        let cases: Vec<(usize, usize, usize)> = self.pick(
            &[(3, 2, 10), (5, 2, 64), (1, 4, 16)],
            &[(1, 32, 128), (13, 8, 64), (40, 4, 128), (3, 2, 10)],
            &[(1, 32, 128), (13, 8, 64), (40, 4, 128), (3, 2, 10)],
        );
        for (tokens, heads, hs) in cases {
            let half = hs / 2;
            // q and k narrowed out of a fused qkv row, as the model does: a strided view on the GPU.
            let width = heads * hs * 3;
            let qkv = self.rng.normals(tokens * width, 1.0);
            let angles: Vec<f32> = (0..tokens * half)
                .map(|_| self.rng.uniform() * 40.0)
                .collect();
            let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
            let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
            // [tokens, 3 * heads, hs] narrowed to the k heads: strides (3 * heads * hs, hs, 1), no copy.
            let view = |t: Tensor| -> Result<Tensor> {
                t.reshape((tokens, 3 * heads, hs))?.narrow(1, heads, heads)
            };
            let cpu_c = Tensor::from_slice(&cos, (tokens, half), &Device::Cpu)?;
            let cpu_s = Tensor::from_slice(&sin, (tokens, half), &Device::Cpu)?;
            let want = flat(&crate::apply_rotary(
                &view(rounded(&qkv, &[tokens, width], dt)?)?,
                &cpu_c,
                &cpu_s,
            )?)?;
            let gx = to_dev(&qkv, &[tokens, width], dt, self.dev)?;
            let (gc, gs) = (cpu_c.to_device(self.dev)?, cpu_s.to_device(self.dev)?);
            poison_pool(self.dev, 64 << 20)?;
            let gv = view(gx.clone())?;
            // One token is contiguous whatever its (unused) token stride: the view is then an offset view.
            if tokens > 1 && gv.is_contiguous() {
                candle_core::bail!("rotary: the strided case must be a strided view");
            }
            let strided = crate::apply_rotary(&gv, &gc, &gs)?;
            let detail = format!("{tokens}x{heads}x{hs}");
            self.compared(
                "rotary (strided qkv view)",
                dt,
                detail.clone(),
                &flat(&strided)?,
                &want,
                hs,
            );
            let contiguous = crate::apply_rotary(&view(gx)?.contiguous()?, &gc, &gs)?;
            self.compared(
                "rotary (contiguous)",
                dt,
                detail,
                &flat(&contiguous)?,
                &want,
                hs,
            );
        }
        Ok(())
    }

    fn check_silu(&mut self, dt: DType) -> Result<()> {
        let cases: Vec<(usize, usize, f32)> = self.pick(
            &[(2, 3, 2.0), (3, 517, 30.0)],
            &[(9, 11008, 2.0), (4, 1001, 2.0), (3, 517, 30.0)],
            &[
                (1, 14336, 2.0),
                (9, 11008, 2.0),
                (4, 1001, 2.0),
                (2, 3, 2.0),
                (3, 517, 30.0),
            ],
        );
        for (rows, inter, scale) in cases {
            let x = self.rng.normals(rows * 2 * inter, scale);
            let shape = [rows, 2 * inter];
            let want = flat(&crate::silu_mul(&rounded(&x, &shape, dt)?)?)?;
            poison_pool(self.dev, 64 << 20)?;
            let got = crate::silu_mul(&to_dev(&x, &shape, dt, self.dev)?)?;
            self.compared(
                "silu_mul",
                dt,
                format!("{rows}x{inter}, inputs ~N(0, {scale}^2)"),
                &flat(&got)?,
                &want,
                inter,
            );
        }
        Ok(())
    }

    /// The W4A16 matmul on the device (small-batch kernel up to 16 rows, dequantize + cuBLAS above) vs the f32
    /// dequantized reference: odd K slices, a last group shorter than the others, act-order, one group, both zero
    /// offsets, the tile boundaries M = 1, 3, 16, 17 and a prefill-sized M.
    fn check_int4(&mut self, dt: DType) -> Result<()> {
        type Case = (usize, usize, usize, Option<usize>, bool, u8);
        let cases: Vec<Case> = self.pick(
            &[
                (1, 264, 64, Some(128), false, 1),
                (3, 520, 136, Some(128), true, 0),
            ],
            &[
                (1, 4096, 4096, Some(128), false, 1),
                (3, 1000, 520, Some(128), true, 0),
                (16, 2048, 1024, None, false, 1),
                (17, 1024, 512, Some(128), true, 1),
                (64, 2048, 1024, Some(128), false, 0),
            ],
            &[
                (1, 4096, 4096, Some(128), false, 1),
                (1, 14336, 4096, Some(128), true, 1),
                (3, 1000, 520, Some(128), true, 0),
                (8, 4096, 14336, Some(128), false, 1),
                (16, 2048, 1024, None, false, 1),
                (17, 1024, 512, Some(128), true, 1),
                (64, 2048, 1024, Some(128), false, 0),
                (300, 4096, 1024, Some(64), true, 1),
            ],
        );
        for (m, k, n, gs, act, zo) in cases {
            let w = Int4Inputs::random(k, n, gs, act, zo, &mut self.rng);
            let x = self.rng.normals(m * k, 1.0);
            let xr = rounded(&x, &[m, k], dt)?;
            let dense = Tensor::from_vec(w.dense(), (n, k), &Device::Cpu)?;
            let want = flat(&xr.matmul(&dense.t()?)?)?;
            let wt = w.tensors(self.dev)?;
            poison_pool(self.dev, 64 << 20)?;
            let got =
                crate::int4_matmul::int4_matmul(&to_dev(&x, &[m, k], dt, self.dev)?, &wt.matrix())?;
            self.compared(
                "int4_matmul",
                dt,
                format!(
                    "M {m}, K {k}, N {n}, group {}, {}zero offset {zo}",
                    gs.map_or("-1".into(), |g| g.to_string()),
                    if act { "act-order, " } else { "" }
                ),
                &flat(&got)?,
                &want,
                n,
            );
        }
        Ok(())
    }

    /// The grouped mixture-of-experts path on the device vs the per-token f32 reference, with
    /// the same routing (drawn on the host) for both.
    fn check_moe(&mut self, dt: DType) -> Result<()> {
        let cases: Vec<(usize, usize, usize, usize, usize)> = self.pick(
            &[(5, 16, 12, 4, 2)],
            &[(1, 512, 384, 8, 2), (37, 512, 384, 8, 2)],
            &[
                (1, 1024, 768, 8, 2),
                (37, 1024, 768, 8, 2),
                (64, 512, 256, 16, 4),
            ],
        );
        for (tokens, hidden, inter, experts, k) in cases {
            let x = self.rng.normals(tokens * hidden, 1.0);
            let gu = self
                .rng
                .normals(experts * 2 * inter * hidden, 1.0 / (hidden as f32).sqrt());
            let dn = self
                .rng
                .normals(experts * hidden * inter, 1.0 / (inter as f32).sqrt());
            let logits = self.rng.normals(tokens * experts, 1.0);
            let logits = Tensor::from_slice(&logits, (tokens, experts), &Device::Cpu)?;
            let (ids, weights) = crate::route_top_k(&logits, k, true)?;
            let (xs, gs, ds) = (
                [tokens, hidden],
                [experts, 2 * inter, hidden],
                [experts, hidden, inter],
            );
            let (gu_ref, dn_ref) = (rounded(&gu, &gs, dt)?, rounded(&dn, &ds, dt)?);
            let want = flat(&crate::fused_moe_reference(
                &rounded(&x, &xs, dt)?,
                &ids,
                &weights,
                &crate::ExpertWeights {
                    gate_up: &gu_ref,
                    down: &dn_ref,
                },
            )?)?;
            poison_pool(self.dev, 64 << 20)?;
            let (gu_dev, dn_dev) = (
                to_dev(&gu, &gs, dt, self.dev)?,
                to_dev(&dn, &ds, dt, self.dev)?,
            );
            for (name, path) in [
                ("expert GEMMs", crate::MoePath::ExpertGemms),
                ("grouped kernels", crate::MoePath::Grouped),
            ] {
                poison_pool(self.dev, 64 << 20)?;
                let got = crate::fused_moe_with(
                    &to_dev(&x, &xs, dt, self.dev)?,
                    &ids.to_device(self.dev)?,
                    &weights.to_device(self.dev)?,
                    &crate::ExpertWeights {
                        gate_up: &gu_dev,
                        down: &dn_dev,
                    },
                    path,
                )?;
                self.compared(
                    "fused_moe",
                    dt,
                    format!(
                        "{name}: {tokens} tokens, hidden {hidden}, inter {inter}, top {k} of {experts}"
                    ),
                    &flat(&got)?,
                    &want,
                    hidden,
                );
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------------ attention

    fn check_attention(&mut self, dt: DType) -> Result<()> {
        use SeqSpec as S;
        let edges = vec![
            S::decode(1),
            S::decode(15),
            S::decode(16),
            S::decode(17),
            S::decode(33),
            S::decode(300),
        ];
        let long = vec![S::decode(1000), S::decode(2500), S::decode(4097)];
        let prompts = vec![
            S::prefill(1),
            S::prefill(16),
            S::prefill(17),
            S::prefill(100),
        ];
        let chunks = vec![S::chunk(200, 37), S::chunk(64, 64), S::chunk(129, 65)];
        let mixed = vec![
            S::decode(50),
            S::prefill(70),
            S::decode(513),
            S::chunk(300, 1),
            S::chunk(90, 33),
        ];
        let tiny_mixed = vec![S::decode(20), S::prefill(9), S::decode(40), S::chunk(30, 7)];
        type Case = (
            &'static str,
            Vec<SeqSpec>,
            usize,
            (usize, usize, usize),
            ScoreRegime,
        );
        let mut cases: Vec<Case> = Vec::new();
        let random = ScoreRegime::Random;
        let scaled = ScoreRegime::ScaledQ(40.0);
        let dominant = ScoreRegime::DominantKey;
        match self.scale {
            Scale::Tiny => {
                for regime in [random, scaled, dominant] {
                    cases.push(("mixed batch", tiny_mixed.clone(), 16, (4, 2, 64), regime));
                }
                cases.push(("mixed batch", tiny_mixed.clone(), 5, (4, 2, 64), random));
                cases.push(("decode", vec![S::decode(600)], 8, (2, 1, 64), dominant));
            }
            Scale::Quick | Scale::Full => {
                let scenarios = [
                    ("decode, block edges", &edges),
                    ("decode, long", &long),
                    ("prefill, 1-token and block-edge prompts", &prompts),
                    ("chunked prefill", &chunks),
                    ("mixed batch", &mixed),
                ];
                let (gqa, head_sizes): (&[(usize, usize)], &[usize]) = if self.scale == Scale::Quick
                {
                    (&[(32, 8), (28, 4)], &[128])
                } else {
                    (
                        &[(8, 8), (32, 8), (32, 4), (28, 4), (16, 1)],
                        &[64, 128, 256],
                    )
                };
                for &hs in head_sizes {
                    for &(heads, kvh) in gqa {
                        if hs == 256 && heads > 16 {
                            continue; // keep the CPU reference time in check
                        }
                        for (name, seqs) in scenarios {
                            cases.push((name, seqs.clone(), 16, (heads, kvh, hs), random));
                        }
                    }
                }
                // Large scores and dominant keys: an overflowing softmax, a skipped or misplaced key.
                for regime in [scaled, dominant] {
                    for (name, seqs) in [
                        ("mixed batch", &mixed),
                        ("decode, long", &long),
                        ("chunked prefill", &chunks),
                    ] {
                        cases.push((name, seqs.clone(), 16, (32, 8, 128), regime));
                    }
                    cases.push(("mixed batch", mixed.clone(), 16, (28, 4, 64), regime));
                }
                // Block sizes other than 16 (the engine's --block-size).
                for bs in [8, 32, 5] {
                    cases.push(("mixed batch", mixed.clone(), bs, (32, 8, 128), random));
                    cases.push(("mixed batch", mixed.clone(), bs, (32, 8, 128), dominant));
                    if self.scale == Scale::Full {
                        cases.push(("decode, long", long.clone(), bs, (32, 8, 128), dominant));
                    }
                }
            }
        }
        for (name, seqs, bs, (heads, kvh, hs), regime) in cases {
            let inp = AttentionInputs::new(&seqs, bs, (heads, kvh, hs), regime, &mut self.rng);
            let meta = inp.case.meta.clone();
            let decode_only = seqs.iter().all(|s| s.q_len == 1);
            let mut want = None;
            for (vname, o) in attention_options(decode_only) {
                let plain = AttentionVariant::default();
                let (w, got) = match want.take() {
                    None => self.attention_pair(&inp, &meta, dt, plain, o)?,
                    Some(w) => {
                        let got = self.attention_on_device(&inp, &meta, dt, plain, o)?;
                        (w, got)
                    }
                };
                self.compared(
                    "paged_attention",
                    dt,
                    format!(
                        "{name}; {regime:?}; block {bs}; hs {hs}, {heads}/{kvh} heads; {vname}"
                    ),
                    &got,
                    &w,
                    hs,
                );
                want = Some(w);
            }
        }
        Ok(())
    }

    /// Sliding windows (shorter than a block, a block edge, longer than some contexts, of one token) and score
    /// soft-caps (Gemma 2's 50, and a low one that flattens large scores) on every kernel path: decode with and
    /// without split-K (windows reach past partitions), tensor-core prefill (windows start mid-tile) and the
    /// general kernel; the reference skips keys outside the window and caps each score.
    fn check_attention_variants(&mut self, dt: DType) -> Result<()> {
        use SeqSpec as S;
        let mixed = vec![
            S::decode(50),
            S::prefill(70),
            S::decode(513),
            S::chunk(300, 1),
            S::chunk(90, 33),
        ];
        let long = vec![S::decode(1000), S::decode(4097)];
        let prompts = vec![S::prefill(200), S::chunk(129, 65)];
        let tiny = vec![S::decode(40), S::prefill(19), S::chunk(30, 7)];
        let v = |window: Option<usize>, softcap: Option<f32>| AttentionVariant { window, softcap };
        let variants = self.pick(
            &[v(Some(8), None), v(None, Some(5.0)), v(Some(3), Some(5.0))],
            &[
                v(Some(16), None),
                v(Some(100), None),
                v(None, Some(50.0)),
                v(Some(33), Some(5.0)),
            ],
            &[
                v(Some(1), None),
                v(Some(7), None),
                v(Some(16), None),
                v(Some(100), None),
                v(Some(300), None),
                v(Some(4096), None),
                v(None, Some(50.0)),
                v(None, Some(5.0)),
                v(Some(33), Some(5.0)),
                v(Some(4096), Some(50.0)),
            ],
        );
        type Scenario = (&'static str, Vec<SeqSpec>, (usize, usize, usize));
        let scenarios: Vec<Scenario> = match self.scale {
            Scale::Tiny => vec![("mixed batch", tiny, (4, 2, 64))],
            _ => vec![
                ("mixed batch", mixed.clone(), (32, 8, 128)),
                ("decode, long", long, (32, 8, 128)),
                ("prefill", prompts, (4, 1, 256)),
                ("mixed batch", mixed, (8, 8, 64)),
            ],
        };
        for variant in variants {
            for (name, seqs, (heads, kvh, hs)) in &scenarios {
                for regime in [ScoreRegime::Random, ScoreRegime::ScaledQ(40.0)] {
                    let inp =
                        AttentionInputs::new(seqs, 16, (*heads, *kvh, *hs), regime, &mut self.rng);
                    let meta = inp.case.meta.clone();
                    let decode_only = seqs.iter().all(|s| s.q_len == 1);
                    let mut want = None;
                    for (vname, o) in attention_options(decode_only) {
                        let (w, got) = match want.take() {
                            None => self.attention_pair(&inp, &meta, dt, variant, o)?,
                            Some(w) => {
                                let got = self.attention_on_device(&inp, &meta, dt, variant, o)?;
                                (w, got)
                            }
                        };
                        self.compared(
                            "paged_attention (window, soft-cap)",
                            dt,
                            format!(
                                "{name}; {regime:?}; {variant:?}; hs {hs}, {heads}/{kvh} heads; {vname}"
                            ),
                            &got,
                            &w,
                            *hs,
                        );
                        want = Some(w);
                    }
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------------ validation

    /// Bad metadata is an error on this device too, before anything runs: a slot past the cache (cache write) and a
    /// block id past the cache or a decreasing `query_start_loc` (attention).
    fn check_validation(&mut self) -> Result<()> {
        let inp = AttentionInputs::new(
            &[SeqSpec::decode(20), SeqSpec::chunk(40, 6)],
            16,
            (4, 2, 64),
            ScoreRegime::Random,
            &mut self.rng,
        );
        let (qd, cd) = (inp.q_dims(), inp.cache_dims());
        let dt = DType::F32;
        let capacity = (inp.case.num_blocks * inp.case.block_size) as i64;
        let mut bad_slot = inp.case.meta.clone();
        bad_slot.slot_mapping[3] = capacity;
        let mut bad_block = inp.case.meta.clone();
        bad_block.block_tables[1] = inp.case.num_blocks as u32;
        let mut bad_qsl = inp.case.meta.clone();
        bad_qsl.query_start_loc[1] = 5;
        bad_qsl.query_start_loc[2] = 4;
        let cache = to_dev(&inp.k, &cd, dt, self.dev)?;
        let before = flat(&cache)?;
        let new = to_dev(
            &self.rng.normals(qd[0] * 2 * 64, 1.0),
            &[qd[0], 2, 64],
            dt,
            self.dev,
        )?;
        let m = AttentionMetadata::new(bad_slot, self.dev)?;
        let wrote = crate::write_step_kv_cache(&cache, &new, &m);
        let untouched = mismatches_exact(&flat(&cache)?, &before);
        self.push(CheckResult::exact(
            "write_kv_cache (slot past the cache is an error)",
            dt,
            format!(
                "slot {capacity} of a {capacity}-slot cache: {}; {untouched} cache elements changed",
                if wrote.is_err() { "rejected" } else { "ACCEPTED" }
            ),
            usize::from(wrote.is_ok()) + untouched,
        ));
        let q = to_dev(&inp.q, &qd, dt, self.dev)?;
        let v = to_dev(&inp.v, &cd, dt, self.dev)?;
        for (what, meta) in [
            ("block id past the cache", bad_block),
            ("decreasing query_start_loc", bad_qsl),
        ] {
            let m = AttentionMetadata::new(meta, self.dev)?;
            let r = paged_attention_with(&q, &cache, &v, &m, inp.scale, Default::default());
            self.push(CheckResult::exact(
                &format!("paged_attention ({what} is an error)"),
                dt,
                if r.is_err() {
                    "rejected".into()
                } else {
                    "ACCEPTED".into()
                },
                usize::from(r.is_ok()),
            ));
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------------ sampling

    fn check_sampling(&mut self) -> Result<()> {
        use SamplingKind as K;
        let runs: Vec<(SamplingKind, usize, usize)> = self.pick(
            &[
                (K::Temperature1, 3000, 64),
                (K::Hostile, 500, 400),
                (K::Hostile, 7, 200),
                (K::Hostile, 1, 40),
                (K::Greedy, 500, 40),
            ],
            &[
                (K::Temperature1, 128_256, 8192),
                (K::Hostile, 32_000, 8192),
                (K::Hostile, 7, 2048),
                (K::Hostile, 1, 200),
                (K::Greedy, 32_000, 2048),
            ],
            &[
                (K::Temperature1, 128_256, 32_768),
                (K::Hostile, 32_000, 32_768),
                (K::Hostile, 1000, 8192),
                (K::Hostile, 7, 4096),
                (K::Hostile, 1, 512),
                (K::Greedy, 128_256, 2048),
                (K::Greedy, 32_000, 4096),
            ],
        );
        for (run, (kind, vocab, rows)) in runs.into_iter().enumerate() {
            let seed = self.seed.wrapping_add(run as u64);
            // About 512 MiB of logits per batch.
            let batch = ((128usize << 20) / vocab).clamp(1, rows);
            let (mut mismatches, mut examples) = (0usize, Vec::new());
            let mut first = 0;
            while first < rows {
                let n = batch.min(rows - first);
                let (logits, params) = sampling_rows(kind, first, n, vocab, seed);
                let greedy = kind == K::Greedy;
                let want =
                    sample_reference_parallel(&logits, vocab, (!greedy).then_some(&params[..]));
                let t = Tensor::from_slice(&logits, (n, vocab), self.dev)?;
                drop(logits);
                let got: Vec<u32> = if greedy {
                    sampling::argmax(&t)?
                } else {
                    sampling::sample(&t, &params)?
                }
                .to_vec1()?;
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    if g != w {
                        mismatches += 1;
                        if examples.len() < 3 {
                            let p = params.get(i).map(|p| format!(" {p:?}")).unwrap_or_default();
                            examples.push(format!("row {}: {g} vs {w}{p}", first + i));
                        }
                    }
                }
                first += n;
            }
            let name = if kind == K::Greedy {
                "argmax"
            } else {
                "sample"
            };
            self.push(CheckResult::exact(
                name,
                DType::F32,
                format!(
                    "{kind:?}: {rows} rows x vocab {vocab}: {mismatches} disagree (rate {:.1e}){}{}",
                    mismatches as f64 / rows as f64,
                    if examples.is_empty() { "" } else { "; " },
                    examples.join("; ")
                ),
                mismatches,
            ));
        }
        Ok(())
    }
}
