//! Output buffers the CPU kernels fill completely. `vec![0f32; n]` zero-fills: with freed
//! blocks kept on the heap (src/main.rs's `mallopt`), that is a memset per op, ~5 % of an
//! encoder batch in a profile, of memory the op overwrites at once.

use std::mem::MaybeUninit;

/// A buffer of `len` elements yet to be written.
pub(crate) fn uninit<T>(len: usize) -> Vec<MaybeUninit<T>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialisation; the capacity is len.
    unsafe { v.set_len(len) };
    v
}

/// # Safety
/// Every element of `v` has been written.
pub(crate) unsafe fn assume_init<T>(v: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: MaybeUninit<T> has T's layout; the caller says every element is initialised.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}
