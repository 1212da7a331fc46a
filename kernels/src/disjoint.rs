//! A buffer that several pool workers write at once, each into places no other worker touches
//! (its own output columns, rows or slots), joined by the pool before anyone reads it.

/// Raw access to a buffer split between workers. The buffer outlives the pool call that uses
/// this, and the pool joins its workers before the buffer is read.
pub(crate) struct DisjointWrites<T>(*mut T);

// SAFETY: every caller writes disjoint elements from its workers (stated at each use) and the
// pool joins them before the buffer is read or dropped.
unsafe impl<T: Send> Sync for DisjointWrites<T> {}

impl<T> DisjointWrites<T> {
    pub(crate) fn new(buffer: &mut [T]) -> Self {
        Self(buffer.as_mut_ptr())
    }

    /// Stores `v` at `i` (dropping what was there).
    ///
    /// # Safety
    /// `i` is in bounds and no other worker touches it.
    pub(crate) unsafe fn write(&self, i: usize, v: T) {
        unsafe { *self.0.add(i) = v }
    }

    /// Elements `start..start + len`.
    ///
    /// # Safety
    /// The range is in bounds and no other worker touches it while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}
