//! Unique counts that merge: an exact set of 64-bit value hashes (with per-value event
//! counts, so removals are exact) up to a threshold, then a HyperLogLog sketch.
//!
//! The sketch: HyperLogLog with p = 16 (65,536 six-bit registers) over XXH3-64 hashes,
//! estimated with Ertl's improved raw estimator ("New cardinality estimation algorithms for
//! HyperLogLog sketches", 2017), which needs no bias tables and is unbiased from 0 to 2^64.
//! Standard error 1.04/sqrt(65536) = 0.41%; about 98% of estimates fall within 1%.
//!
//! Why not a crate: the state is stored in the database and compared with a rebuild, so its
//! bytes must be a pure function of the set (no insertion-order-dependent sparse buffers as in
//! `hyperloglogplus`), the hash must be fixed by a specification (XXH3, not `std::hash`,
//! which `cardinality-estimator` and `hyperloglog` build on and which may change between
//! Rust releases), and the exact-to-sketch switch must hash exactly like the sketch.
//!
//! A state is a pure function of the multiset of values in a bucket: exact while it holds at
//! most `threshold` distinct values, else the sketch of all of them. Incremental updates keep
//! that invariant except for removals from a sketch, which report [`NeedsRecompute`].

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Register-index bits.
pub const HLL_P: u32 = 16;
const M: usize = 1 << HLL_P;
/// Bits left for the rank.
const Q: u32 = 64 - HLL_P;
/// The sketch's relative standard error, for documentation and tests.
pub const HLL_STANDARD_ERROR: f64 = 1.04 / 256.0;

/// The fixed 64-bit hash of a value (XXH3-64, seed 0).
pub fn hash_value(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// A HyperLogLog sketch.
#[derive(Clone, PartialEq, Eq)]
pub struct Hll {
    regs: Box<[u8]>,
}

impl std::fmt::Debug for Hll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hll(~{:.0})", self.estimate())
    }
}

impl Default for Hll {
    fn default() -> Self {
        Hll::new()
    }
}

impl Hll {
    pub fn new() -> Self {
        Hll {
            regs: vec![0u8; M].into_boxed_slice(),
        }
    }

    pub fn insert_hash(&mut self, h: u64) {
        let idx = (h >> Q) as usize;
        let rest = h << HLL_P;
        let rank = (rest.leading_zeros() + 1).min(Q + 1) as u8;
        if self.regs[idx] < rank {
            self.regs[idx] = rank;
        }
    }

    pub fn merge(&mut self, other: &Hll) {
        for (a, b) in self.regs.iter_mut().zip(other.regs.iter()) {
            if *b > *a {
                *a = *b;
            }
        }
    }

    /// Ertl's improved raw estimator.
    pub fn estimate(&self) -> f64 {
        let mut c = [0u32; (Q + 2) as usize];
        for &r in self.regs.iter() {
            c[r as usize] += 1;
        }
        let m = M as f64;
        let mut z = m * tau(1.0 - c[(Q + 1) as usize] as f64 / m);
        for k in (1..=Q as usize).rev() {
            z = 0.5 * (z + c[k] as f64);
        }
        z += m * sigma(c[0] as f64 / m);
        let alpha_inf = 1.0 / (2.0 * std::f64::consts::LN_2);
        alpha_inf * m * m / z
    }

    /// Registers packed 6 bits each (49,152 bytes).
    fn pack(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(M * 6 / 8);
        for chunk in self.regs.chunks(4) {
            let v = (chunk[0] as u32) << 18
                | (chunk[1] as u32) << 12
                | (chunk[2] as u32) << 6
                | chunk[3] as u32;
            out.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
        }
        out
    }

    fn unpack(bytes: &[u8]) -> Option<Hll> {
        if bytes.len() != M * 6 / 8 {
            return None;
        }
        let mut regs = Vec::with_capacity(M);
        for b in bytes.chunks(3) {
            let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for shift in [18, 12, 6, 0] {
                let r = ((v >> shift) & 0x3f) as u8;
                if r > (Q + 1) as u8 {
                    return None;
                }
                regs.push(r);
            }
        }
        Some(Hll {
            regs: regs.into_boxed_slice(),
        })
    }
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if z == prev {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == prev {
            return z / 3.0;
        }
    }
}

/// A removal hit a sketch (or a value the exact set does not hold): the bucket must be
/// recomputed from the raw events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedsRecompute;

/// Distinct values of one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uniq {
    /// value hash -> number of events carrying it
    Exact(BTreeMap<u64, u32>),
    Sketch(Box<Hll>),
}

impl Default for Uniq {
    fn default() -> Self {
        Uniq::Exact(BTreeMap::new())
    }
}

const EXACT_PREFIX: &str = "x1:";
const SKETCH_PREFIX: &str = "h16:";

impl Uniq {
    /// Adds one event carrying value hash `h`; switches to the sketch past `threshold`
    /// distinct values.
    pub fn add(&mut self, h: u64, threshold: u64) {
        match self {
            Uniq::Exact(set) => {
                *set.entry(h).or_insert(0) += 1;
                if set.len() as u64 > threshold {
                    let mut hll = Hll::new();
                    for &k in set.keys() {
                        hll.insert_hash(k);
                    }
                    *self = Uniq::Sketch(Box::new(hll));
                }
            }
            Uniq::Sketch(hll) => hll.insert_hash(h),
        }
    }

    /// Removes one event carrying value hash `h`.
    pub fn remove(&mut self, h: u64) -> Result<(), NeedsRecompute> {
        match self {
            Uniq::Exact(set) => match set.get_mut(&h) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    Ok(())
                }
                Some(_) => {
                    set.remove(&h);
                    Ok(())
                }
                None => Err(NeedsRecompute),
            },
            Uniq::Sketch(_) => Err(NeedsRecompute),
        }
    }

    /// The number of distinct values (estimated for a sketch).
    pub fn count(&self) -> u64 {
        match self {
            Uniq::Exact(set) => set.len() as u64,
            Uniq::Sketch(hll) => hll.estimate().round() as u64,
        }
    }

    pub fn is_exact(&self) -> bool {
        matches!(self, Uniq::Exact(_))
    }

    /// About how much memory it holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        match self {
            Uniq::Exact(set) => 32 + set.len() * 24,
            Uniq::Sketch(_) => 32 + M,
        }
    }

    /// The stored form: `x1:` + base64 of (hash u64 BE, LEB128 count)..., or `h16:` +
    /// base64 of the packed registers.
    pub fn encode(&self) -> String {
        match self {
            Uniq::Exact(set) => {
                let mut bytes = Vec::with_capacity(set.len() * 9);
                for (&h, &n) in set {
                    bytes.extend_from_slice(&h.to_be_bytes());
                    let mut n = n;
                    loop {
                        let b = (n & 0x7f) as u8;
                        n >>= 7;
                        if n == 0 {
                            bytes.push(b);
                            break;
                        }
                        bytes.push(b | 0x80);
                    }
                }
                format!("{EXACT_PREFIX}{}", B64.encode(bytes))
            }
            Uniq::Sketch(hll) => format!("{SKETCH_PREFIX}{}", B64.encode(hll.pack())),
        }
    }

    /// Parses [`Uniq::encode`]'s form; the error names what is wrong.
    pub fn decode(s: &str) -> Result<Uniq, String> {
        if let Some(b) = s.strip_prefix(EXACT_PREFIX) {
            let bytes = B64
                .decode(b)
                .map_err(|e| format!("exact set: bad base64: {e}"))?;
            let mut set = BTreeMap::new();
            let mut p = bytes.as_slice();
            while !p.is_empty() {
                if p.len() < 9 {
                    return Err("exact set: truncated entry".into());
                }
                let h = u64::from_be_bytes(p[..8].try_into().unwrap_or_default());
                p = &p[8..];
                let mut n: u32 = 0;
                let mut shift = 0;
                loop {
                    let Some((&b, rest)) = p.split_first() else {
                        return Err("exact set: truncated count".into());
                    };
                    p = rest;
                    if shift > 28 {
                        return Err("exact set: count overflows".into());
                    }
                    n |= ((b & 0x7f) as u32) << shift;
                    shift += 7;
                    if b & 0x80 == 0 {
                        break;
                    }
                }
                if n == 0 || set.insert(h, n).is_some() {
                    return Err("exact set: zero count or repeated value".into());
                }
            }
            Ok(Uniq::Exact(set))
        } else if let Some(b) = s.strip_prefix(SKETCH_PREFIX) {
            let bytes = B64
                .decode(b)
                .map_err(|e| format!("sketch: bad base64: {e}"))?;
            Hll::unpack(&bytes)
                .map(|h| Uniq::Sketch(Box::new(h)))
                .ok_or_else(|| {
                    format!(
                        "sketch: {} bytes of registers, bad length or rank",
                        bytes.len()
                    )
                })
        } else {
            let head: String = s.chars().take(8).collect();
            Err(format!("unknown unique-state format starting '{head}'"))
        }
    }
}

/// The union of several buckets' distinct values: exact while every part is exact, else a
/// merged sketch. This is how ranges are answered: never by adding per-bucket counts.
#[derive(Debug, Default)]
pub struct UniqUnion {
    exact: HashSet<u64, BuildHasherDefault<HashIsKey>>,
    sketch: Option<Box<Hll>>,
}

/// The values of an exact set are already 64-bit hashes ([`hash_value`]): hashing them
/// again (SipHash) was most of a week's union.
#[derive(Default)]
struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl UniqUnion {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, u: &Uniq) {
        match u {
            Uniq::Exact(set) => {
                if let Some(hll) = &mut self.sketch {
                    for &h in set.keys() {
                        hll.insert_hash(h);
                    }
                } else {
                    self.exact.extend(set.keys().copied());
                }
            }
            Uniq::Sketch(other) => {
                let hll = self.sketch.get_or_insert_with(|| {
                    let mut hll = Hll::new();
                    for &h in &self.exact {
                        hll.insert_hash(h);
                    }
                    Box::new(hll)
                });
                hll.merge(other);
                self.exact.clear();
            }
        }
    }

    /// (distinct count, exact?)
    pub fn count(&self) -> (u64, bool) {
        match &self.sketch {
            Some(hll) => (hll.estimate().round() as u64, false),
            None => (self.exact.len() as u64, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sketch_estimates_zero_and_small_sets_closely() {
        let mut h = Hll::new();
        assert_eq!(h.estimate(), 0.0);
        for i in 0..1000 {
            h.insert_hash(hash_value(&format!("user_{i}")));
        }
        let e = h.estimate();
        assert!((e - 1000.0).abs() < 20.0, "estimate {e} for 1000 values");
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut u = Uniq::default();
        for i in 0..300u64 {
            u.add(hash_value(&format!("u{}", i % 120)), 10_000);
        }
        let back = Uniq::decode(&u.encode()).unwrap();
        assert_eq!(back, u);
        let mut s = Uniq::default();
        for i in 0..50u64 {
            s.add(hash_value(&i.to_string()), 10);
        }
        assert!(!s.is_exact());
        assert_eq!(Uniq::decode(&s.encode()).unwrap(), s);
        assert!(Uniq::decode("zz:abc").unwrap_err().contains("unknown"));
        assert!(Uniq::decode("h16:AAAA").unwrap_err().contains("bad length"));
    }

    #[test]
    fn removal_from_exact_is_exact_and_from_sketch_asks_for_recompute() {
        let mut u = Uniq::default();
        u.add(1, 10);
        u.add(1, 10);
        u.add(2, 10);
        assert_eq!(u.count(), 2);
        u.remove(1).unwrap();
        assert_eq!(u.count(), 2);
        u.remove(1).unwrap();
        assert_eq!(u.count(), 1);
        assert_eq!(u.remove(1), Err(NeedsRecompute));
        let mut s = Uniq::default();
        for i in 0..20 {
            s.add(i, 10);
        }
        assert_eq!(s.remove(3), Err(NeedsRecompute));
    }
}
