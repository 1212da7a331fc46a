//! 4-bit nibbles in 32-bit words, the packing GPTQ and AWQ share: eight values a word, value
//! `i` of a word at bits `4i..4i+4`. GPTQ packs along K (rows of `Wᵀ`) in natural order; AWQ
//! packs along N (columns) in its interleaved order.

/// AWQ's packing order: nibble `i` of a word holds column `8c + AWQ_ORDER[i]`.
pub const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];
/// Natural order (GPTQ).
pub const NATURAL_ORDER: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// `[rows, cols]` values (`0..16`) packed along rows: `[rows/8, cols]` words, row `8r + j` of
/// column `c` at nibble `j` of word `(r, c)`.
pub fn pack_rows(values: &[u8], rows: usize, cols: usize) -> Vec<i32> {
    let mut out = vec![0u32; rows / 8 * cols];
    for r in 0..rows {
        let shift = 4 * (r % 8);
        for c in 0..cols {
            out[(r / 8) * cols + c] |= u32::from(values[r * cols + c] & 0xF) << shift;
        }
    }
    out.into_iter().map(|w| w as i32).collect()
}

/// `[rows, cols]` values packed along columns in `order`: `[rows, cols/8]` words, nibble `i`
/// of word `(r, w)` holding column `8w + order[i]`.
pub fn pack_cols(values: &[u8], rows: usize, cols: usize, order: &[usize; 8]) -> Vec<i32> {
    let words = cols / 8;
    let mut out = vec![0u32; rows * words];
    for r in 0..rows {
        for w in 0..words {
            let mut word = 0u32;
            for (i, &col) in order.iter().enumerate() {
                word |= u32::from(values[r * cols + 8 * w + col] & 0xF) << (4 * i);
            }
            out[r * words + w] = word;
        }
    }
    out.into_iter().map(|w| w as i32).collect()
}

/// Inverse of [`pack_cols`].
pub fn unpack_cols(words: &[i32], rows: usize, cols: usize, order: &[usize; 8]) -> Vec<u8> {
    let per_row = cols / 8;
    let mut out = vec![0u8; rows * cols];
    for r in 0..rows {
        for w in 0..per_row {
            let word = words[r * per_row + w] as u32;
            for (i, &col) in order.iter().enumerate() {
                out[r * cols + 8 * w + col] = ((word >> (4 * i)) & 0xF) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inverse of [`pack_rows`]: `[rows/8, cols]` words to `[rows, cols]` values.
    fn unpack_rows(words: &[i32], rows: usize, cols: usize) -> Vec<u8> {
        let mut out = vec![0u8; rows * cols];
        for r in 0..rows {
            let shift = 4 * (r % 8);
            for c in 0..cols {
                out[r * cols + c] = ((words[(r / 8) * cols + c] as u32 >> shift) & 0xF) as u8;
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8 & 0xF)
            .collect()
    }

    #[test]
    fn rows_round_trip_and_put_row_j_at_nibble_j() {
        let (rows, cols) = (24, 5);
        let v = values(rows * cols, 1);
        let packed = pack_rows(&v, rows, cols);
        assert_eq!(packed.len(), 3 * cols);
        assert_eq!(unpack_rows(&packed, rows, cols), v);
        // Word (1, 2) holds rows 8..16 of column 2, row 8 in the low nibble.
        let w = packed[cols + 2] as u32;
        for j in 0..8 {
            assert_eq!((w >> (4 * j)) & 0xF, u32::from(v[(8 + j) * cols + 2]));
        }
    }

    #[test]
    fn cols_round_trip_in_both_orders() {
        let (rows, cols) = (3, 32);
        let v = values(rows * cols, 7);
        for order in [&NATURAL_ORDER, &AWQ_ORDER] {
            let packed = pack_cols(&v, rows, cols, order);
            assert_eq!(packed.len(), rows * 4);
            assert_eq!(unpack_cols(&packed, rows, cols, order), v);
        }
    }

    #[test]
    fn awq_order_interleaves_even_then_odd_columns() {
        // Columns 0..8 holding their own index: AWQ's word reads 0,2,4,6,1,3,5,7 from the
        // low nibble up (AutoAWQ's pack; vLLM's AWQ_REVERSE_ORDER [0,4,1,5,2,6,3,7] undoes
        // it).
        let v: Vec<u8> = (0..8).collect();
        let w = pack_cols(&v, 1, 8, &AWQ_ORDER)[0] as u32;
        let nibbles: Vec<u32> = (0..8).map(|i| (w >> (4 * i)) & 0xF).collect();
        assert_eq!(nibbles, vec![0, 2, 4, 6, 1, 3, 5, 7]);
        const REVERSE: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];
        for (col, &nibble) in REVERSE.iter().enumerate() {
            assert_eq!(nibbles[nibble], col as u32);
        }
        // GPTQ's natural order: 0x76543210.
        assert_eq!(pack_cols(&v, 1, 8, &NATURAL_ORDER)[0], 0x7654_3210);
    }
}
