//! Intel AMX (Advanced Matrix Extensions) on the CPU: whether this process may use it, and the
//! tile instructions the matmuls here are written in.
//!
//! AMX multiplies 16×32 bf16 tiles into 16×16 f32 accumulators, about 16× the multiply-adds a
//! cycle of AVX-512 f32 FMA. Rust has no stable AMX intrinsics, so the instructions are inline
//! assembly: stable, and it needs no target feature (the assembler takes the mnemonics as they
//! are). Linux hands the 8 KiB of tile state to a process only when asked
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); until then a tile instruction is a fault. [`available`]
//! asks once, and says no when the CPU lacks AMX, the kernel refuses, or the operator set
//! `INDUS_AMX=off`.

pub mod split_bf16;

use std::sync::OnceLock;

/// Whether AMX-BF16 is usable in this process (asked of the CPU and the kernel once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var("INDUS_AMX").is_ok_and(|v| v == "off" || v == "0") {
            return false;
        }
        cpu_has_amx_bf16() && os_grants_tile_data()
    })
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_amx_bf16() -> bool {
    use std::arch::x86_64::__cpuid_count;
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    let amx_bf16 = edx & (1 << 22) != 0;
    let amx_tile = edx & (1 << 24) != 0;
    amx_bf16 && amx_tile
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_amx_bf16() -> bool {
    false
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn os_grants_tile_data() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this request only changes which state the kernel saves for
    // this process; it reads and writes no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn os_grants_tile_data() -> bool {
    false
}

/// Measured cost of one tile load (16 rows of 64 bytes, from L1) and of one bf16 tile product
/// (16×16×32), in ns, on this thread: the terms of the split-bf16 matmul's floor
/// (`cargo bench -p indus-kernels --bench split_bf16` prints it). `None` without AMX.
pub fn probe_tile_costs(iters: usize) -> Option<(f64, f64)> {
    #[cfg(target_arch = "x86_64")]
    if available() {
        let data = vec![0u16; 4 * 512];
        let p = data.as_ptr().cast::<u8>();
        // SAFETY: AMX is available; the tiles are configured first and released last; every
        // load reads inside `data` (four 1 KiB tiles).
        unsafe {
            tile::configure_full();
            tile::zero0();
            tile::zero1();
            tile::zero2();
            tile::zero3();
            let start = std::time::Instant::now();
            for _ in 0..iters {
                tile::load4(p, tile::ROW_BYTES);
                tile::load5(p.add(1024), tile::ROW_BYTES);
                tile::load6(p.add(2048), tile::ROW_BYTES);
                tile::load7(p.add(3072), tile::ROW_BYTES);
            }
            let load = start.elapsed().as_secs_f64() * 1e9 / (4 * iters) as f64;
            let start = std::time::Instant::now();
            for _ in 0..iters {
                tile::dp!("tmm0", "tmm4", "tmm6");
                tile::dp!("tmm1", "tmm4", "tmm7");
                tile::dp!("tmm2", "tmm5", "tmm6");
                tile::dp!("tmm3", "tmm5", "tmm7");
            }
            let product = start.elapsed().as_secs_f64() * 1e9 / (4 * iters) as f64;
            tile::release();
            return Some((load, product));
        }
    }
    let _ = iters;
    None
}

/// The tile instructions, each a one-line asm block with its tile register fixed (AMX has no
/// register operand that asm! could allocate).
#[cfg(target_arch = "x86_64")]
pub(crate) mod tile {
    use std::arch::asm;

    /// Rows in a tile, and bytes in a tile row.
    pub const ROWS: usize = 16;
    pub const ROW_BYTES: usize = 64;

    /// `ldtilecfg`'s 64-byte operand (palette 1).
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    /// Configures all eight tiles as full 16 × 64-byte tiles on this thread.
    ///
    /// # Safety
    /// [`super::available`] returned true.
    pub unsafe fn configure_full() {
        let mut cfg = Config {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            cfg.colsb[t] = ROW_BYTES as u16;
            cfg.rows[t] = ROWS as u8;
        }
        unsafe { asm!("ldtilecfg [{}]", in(reg) &cfg, options(nostack, readonly)) };
    }

    /// Returns the tiles to their initial state, so this thread's context switches stop
    /// saving 8 KiB of tile data.
    ///
    /// # Safety
    /// [`super::available`] returned true.
    pub unsafe fn release() {
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    macro_rules! accumulators {
        ($($zero:ident, $store:ident, $tmm:literal;)*) => {$(
            /// Zeroes this accumulator tile.
            ///
            /// # Safety
            /// Tiles are configured on this thread.
            #[inline(always)]
            pub unsafe fn $zero() {
                unsafe { asm!(concat!("tilezero ", $tmm), options(nostack, nomem)) };
            }
            /// Stores the tile as 16 rows of 64 bytes, `stride` bytes apart, at `ptr`.
            ///
            /// # Safety
            /// Tiles are configured and the 16 rows are writable.
            #[inline(always)]
            pub unsafe fn $store(ptr: *mut u8, stride: usize) {
                unsafe {
                    asm!(concat!("tilestored [{p} + {s}*1], ", $tmm),
                        p = in(reg) ptr, s = in(reg) stride, options(nostack))
                };
            }
        )*};
    }

    macro_rules! loads {
        ($($load:ident, $tmm:literal;)*) => {$(
            /// Loads 16 rows of 64 bytes, `stride` bytes apart, from `ptr`.
            ///
            /// # Safety
            /// Tiles are configured and the 16 rows are readable.
            #[inline(always)]
            pub unsafe fn $load(ptr: *const u8, stride: usize) {
                unsafe {
                    asm!(concat!("tileloadd ", $tmm, ", [{p} + {s}*1]"),
                        p = in(reg) ptr, s = in(reg) stride, options(nostack, readonly))
                };
            }
        )*};
    }

    accumulators! {
        zero0, store0, "tmm0";
        zero1, store1, "tmm1";
        zero2, store2, "tmm2";
        zero3, store3, "tmm3";
    }

    loads! {
        load2, "tmm2";
        load3, "tmm3";
        load4, "tmm4";
        load5, "tmm5";
        load6, "tmm6";
        load7, "tmm7";
    }

    /// `tdpbf16ps acc, a, b`: `acc[i][j] += Σ_p a[i][2p]·b[p][2j] + a[i][2p+1]·b[p][2j+1]`.
    macro_rules! dp {
        ($acc:literal, $a:literal, $b:literal) => {
            // Used inside the caller's unsafe block: tiles are configured and hold what it
            // loaded.
            std::arch::asm!(
                concat!("tdpbf16ps ", $acc, ", ", $a, ", ", $b),
                options(nostack, nomem)
            )
        };
    }
    pub(crate) use dp;
}
