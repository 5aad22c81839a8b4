//! Bit packing for masks and sign bits: one bit per flag, least significant
//! bit first within each byte, so bit `i` lives in byte `i / 8` at position
//! `i % 8`. The compiled artifacts read masks in the same order, which is why
//! the layout is fixed here rather than left to the serializer (bincode would
//! spend a whole byte per `bool`).

/// Packs flags LSB-first into `ceil(n / 8)` bytes; unused high bits of the
/// last byte are zero.
pub fn pack_bits(bits: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, &b) in bits.iter().enumerate() {
        if b {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// Unpacks the first `n` flags. Bits beyond the end of `bytes` read as
/// `false`, so this never panics; callers that need an exact length check it
/// with [`packed_len`] first.
pub fn unpack_bits(bytes: &[u8], n: usize) -> Vec<bool> {
    (0..n)
        .map(|i| bytes.get(i / 8).is_some_and(|&b| b >> (i % 8) & 1 == 1))
        .collect()
}

/// Bytes needed to pack `n` flags.
pub fn packed_len(n: usize) -> usize {
    n.div_ceil(8)
}

/// Number of set flags among the first `n` packed bits.
pub fn count_ones(bytes: &[u8], n: usize) -> usize {
    let full = (n / 8).min(bytes.len());
    let mut c: usize = bytes[..full].iter().map(|b| b.count_ones() as usize).sum();
    if let (r @ 1.., Some(&last)) = (n % 8, bytes.get(n / 8)) {
        c += (last & ((1u8 << r) - 1)).count_ones() as usize;
    }
    c
}

/// Whether `bytes` is exactly the packing of `n` flags: the right length
/// and zero padding bits (a canonical encoding, so damage cannot hide there).
pub fn is_canonical(bytes: &[u8], n: usize) -> bool {
    if bytes.len() != packed_len(n) {
        return false;
    }
    match (n % 8, bytes.last()) {
        (0, _) | (_, None) => true,
        (r, Some(&last)) => last >> r == 0,
    }
}
