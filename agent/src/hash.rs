//! A small stable hash (FNV-1a 64 with a final mix) for the demo backend's
//! decisions: std's hashers are seeded per process, and the demo must behave the
//! same in every run.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Separates the parts of a hashed tuple. 0xff never occurs in UTF-8 text, so
/// ("ab", "c") and ("a", "bc") hash differently.
const SEPARATOR: u8 = 0xff;

/// FNV-1a over the bytes written, finished with a 64-bit mix.
#[derive(Debug, Clone)]
pub struct StableHasher {
    state: u64,
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl StableHasher {
    pub fn new() -> Self {
        Self { state: FNV_OFFSET }
    }

    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for byte in bytes {
            self.state ^= u64::from(*byte);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
        self
    }

    /// Writes one part of a tuple, followed by a separator.
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.write(bytes).write(&[SEPARATOR])
    }

    pub fn part_u64(&mut self, value: u64) -> &mut Self {
        self.part(&value.to_le_bytes())
    }

    /// The raw FNV-1a value, without the final mix.
    pub fn fnv(&self) -> u64 {
        self.state
    }

    /// The hash. FNV-1a alone leaves inputs that differ only in their last
    /// byte close together in the high bits; the final mix (MurmurHash3's
    /// fmix64) spreads them, so `unit` is evenly spread too.
    pub fn finish(&self) -> u64 {
        let mut h = self.state;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h
    }

    /// The hash as a number in [0, 1): the top 53 bits, which an f64 holds exactly.
    pub fn unit(&self) -> f64 {
        (self.finish() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_test_vectors() {
        assert_eq!(StableHasher::new().fnv(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(StableHasher::new().write(b"a").fnv(), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            StableHasher::new().write(b"foobar").fnv(),
            0x8594_4171_f739_67e8
        );
    }

    #[test]
    fn same_input_same_hash() {
        let a = StableHasher::new().part(b"item").part_u64(3).finish();
        let b = StableHasher::new().part(b"item").part_u64(3).finish();
        assert_eq!(a, b);
        assert_ne!(a, StableHasher::new().part(b"item").part_u64(4).finish());
    }

    #[test]
    fn parts_are_separated() {
        let ab_c = StableHasher::new().part(b"ab").part(b"c").finish();
        let a_bc = StableHasher::new().part(b"a").part(b"bc").finish();
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn unit_is_in_range_and_spread() {
        let values: Vec<f64> = (0..1000u64)
            .map(|n| StableHasher::new().part_u64(n).unit())
            .collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let below_half = values.iter().filter(|v| **v < 0.5).count();
        assert!((400..600).contains(&below_half), "{below_half} of 1000");
    }
}
