//! Clumps' member vectors in memory, for [`nearest_texts`](crate::vectors::nearest_texts).
//!
//! A search ranks the clumps and then takes the nearest members of the nearest
//! of them (see [`vectors`](crate::vectors)). PostgreSQL scores members row by
//! row at ~1.3 µs each, and a top-50 search over a million texts opens clumps
//! with 75,000 members or more. Here a clump's members are read once, binary,
//! and kept as contiguous arrays: each member's offset from the clump's centroid
//! in 4-bit codes, which a search scans to pick the members worth scoring, and
//! its stored vector, which scores them exactly. The representatives are held
//! too ([`Representatives`]), with what their clumps are ranked by, and every
//! clump's revision ([`ClumpRevisions`]).
//!
//! A copy is only used while it is the clump: each clump has a revision
//! (`embedding_clumps`, kept by triggers on `embedding_texts`) that changes
//! whenever its members do, and a row of generations (`embedding_generations`)
//! says when any revision, or the set of representatives, changed; each search
//! reads it, and reads again what moved on. A search never waits
//! for a clump to be read: PostgreSQL scores the clumps the cache does not hold
//! at their current revision, and the cache notes them as wanted, for
//! [`fill_clump_cache`](crate::vectors::fill_clump_cache) to read off the search
//! path. Copies are dropped least recently used first once they take more than
//! the cache's capacity.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use crate::vectors::TextKey;

/// One clump's members at one revision: their keys and vectors, row by row,
/// each vector twice: as stored (f32), and its direction's offset from the
/// clump's centroid in 4-bit codes, for the scan that picks which members to
/// score exactly.
#[derive(Debug)]
pub struct Clump {
    revision: i64,
    keys: Vec<TextKey>,
    dimensions: usize,
    /// `keys.len()` vectors of `dimensions` each, one after another.
    vectors: Vec<f32>,
    /// 1 / |v| of each vector (stored vectors are unit length, up to rounding).
    inverse_norms: Vec<f32>,
    /// The mean of the members' directions (unit vectors u = v / |v|).
    centroid: Vec<f32>,
    /// Each row's offset u − centroid as `round(offset / scale)` in −7..=7, plus
    /// 8, two to a byte ([`nibble_row`]).
    nibbles: Vec<u8>,
    /// Each row's scale: max |offset_i| / 7.
    scales: Vec<f32>,
}

/// The largest 4-bit code: codes run −7..=7, stored as 1..=15.
const NIBBLE_MAX: f32 = 7.0;

impl Clump {
    /// A clump at `revision` from its members' keys and vectors. Members whose
    /// vector has another length than the first are left out (a vector column has
    /// one dimension, so there are none).
    pub fn new(revision: i64, members: Vec<(TextKey, Vec<f32>)>) -> Clump {
        let dimensions = members.first().map_or(0, |(_, v)| v.len());
        let members: Vec<_> = members
            .into_iter()
            .filter(|(_, v)| v.len() == dimensions)
            .collect();
        let rows = members.len();
        let inverse_norms: Vec<f32> = members.iter().map(|(_, v)| inverse_norm(v)).collect();
        let mut centroid = vec![0.0f32; dimensions];
        for ((_, v), inverse_norm) in members.iter().zip(&inverse_norms) {
            for (c, x) in centroid.iter_mut().zip(v) {
                *c += x * inverse_norm;
            }
        }
        if rows > 0 {
            centroid.iter_mut().for_each(|c| *c /= rows as f32);
        }
        let mut keys = Vec::with_capacity(rows);
        let mut vectors = Vec::with_capacity(rows * dimensions);
        let mut nibbles = Vec::with_capacity(rows * nibble_row(dimensions));
        let mut scales = Vec::with_capacity(rows);
        let mut offset = vec![0.0f32; dimensions];
        for ((key, vector), inverse_norm) in members.into_iter().zip(&inverse_norms) {
            for ((o, x), c) in offset.iter_mut().zip(&vector).zip(&centroid) {
                *o = x * inverse_norm - c;
            }
            scales.push(quantise(&offset, &mut nibbles));
            keys.push(key);
            vectors.extend_from_slice(&vector);
        }
        Clump {
            revision,
            keys,
            dimensions,
            vectors,
            inverse_norms,
            centroid,
            nibbles,
            scales,
        }
    }

    /// The mean of its members' directions.
    pub fn centroid(&self) -> &[f32] {
        &self.centroid
    }

    /// Its revision in `embedding_clumps`.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// How many members it has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes it holds (what counts against the cache's capacity).
    pub fn bytes(&self) -> usize {
        Clump::bytes_of(self.keys.len(), self.dimensions)
    }

    /// Bytes a clump of `members` vectors of `dimensions` holds, with its
    /// members' entries in the cache's index of texts.
    pub fn bytes_of(members: usize, dimensions: usize) -> usize {
        let per_member = std::mem::size_of::<TextKey>()
            + nibble_row(dimensions)
            + (dimensions + 2) * std::mem::size_of::<f32>() // vector, norm, scale
            + TEXT_INDEX_BYTES;
        std::mem::size_of::<Clump>()
            + dimensions * std::mem::size_of::<f32>() // centroid
            + members * per_member
    }

    /// The cosine distance of row `row` to `query` from the stored vector (the
    /// same measure as pgvector's `<=>`).
    #[inline(always)]
    fn distance(&self, row: usize, query: &QueryCodes) -> f64 {
        let vector = &self.vectors[row * self.dimensions..(row + 1) * self.dimensions];
        let similarity = f64::from(dot(&query.unit, vector)) * f64::from(self.inverse_norms[row]);
        1.0 - similarity.clamp(-1.0, 1.0)
    }
}

/// 1 / |v|, or 0 for the zero vector.
fn inverse_norm(v: &[f32]) -> f32 {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        1.0 / norm
    } else {
        0.0
    }
}

/// Bytes an entry of the cache's index of texts takes (key, clump, row, and
/// the hash table's slack).
const TEXT_INDEX_BYTES: usize = 64;

/// Bytes of one row of 4-bit codes: dimension `i` of the first half is the low
/// nibble of byte `i`, dimension `half + i` its high nibble.
fn nibble_row(dimensions: usize) -> usize {
    dimensions.div_ceil(2)
}

/// A query vector made ready for the scan: its direction, and that in 8-bit
/// codes laid out as [`Clump::nibbles`] unpack.
struct QueryCodes {
    unit: Vec<f32>,
    /// `2 · nibble_row(dimensions)` codes: the odd dimension count's last is 0.
    codes: Vec<i8>,
    /// The sum of the codes (a member's codes are stored 8 up).
    code_sum: i32,
    scale: f32,
}

impl QueryCodes {
    /// `None` for the zero vector (no direction to compare).
    fn new(query: &[f32]) -> Option<QueryCodes> {
        let norm = dot(query, query).sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return None;
        }
        let unit: Vec<f32> = query.iter().map(|x| x / norm).collect();
        let (mut codes, scale) = byte_codes(&unit);
        codes.resize(2 * nibble_row(unit.len()), 0);
        let code_sum = codes.iter().map(|&c| i32::from(c)).sum();
        Some(QueryCodes {
            unit,
            codes,
            code_sum,
            scale,
        })
    }
}

/// Appends `offset` as 4-bit codes, `round(o_i / scale) + 8` with scale
/// max |o_i| / 7, two to a byte ([`nibble_row`]), and returns the scale.
fn quantise(offset: &[f32], nibbles: &mut Vec<u8>) -> f32 {
    let largest = offset.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = largest / NIBBLE_MAX;
    let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let code = |i: usize| -> u8 {
        offset.get(i).map_or(8, |o| {
            ((o * inverse).round().clamp(-NIBBLE_MAX, NIBBLE_MAX) as i8 + 8) as u8
        })
    };
    let half = nibble_row(offset.len());
    nibbles.extend((0..half).map(|i| code(i) | (code(half + i) << 4)));
    scale
}

/// The largest 8-bit code ([`byte_codes`]). For a query, its rounding moves an
/// estimate by ~1e-4, a tenth of what the members' 4-bit codes do, and a
/// product with a stored code (0..=15) fits AVX2's byte multiply-add without
/// saturating.
const BYTE_CODE_MAX: f32 = 127.0;

/// Members scored exactly for each text a search asks for: the scan's estimates
/// are only close, so the nearest by estimate are scored, and the answer is
/// the nearest of those. On the million vectors of the benchmark, four per text
/// found what scoring every scanned member exactly finds (BENCHMARKS.md); eight
/// leave a margin at ~0.1 ms.
const SCORED_PER_RESULT: usize = 8;

/// The fewest members scored exactly, however few texts are asked for.
const SCORED_AT_LEAST: usize = 256;

/// How many members [`score_clumps`] scores exactly for the `n` nearest texts.
pub fn members_scored_exactly(n: usize) -> usize {
    (n * SCORED_PER_RESULT).max(SCORED_AT_LEAST)
}

/// Offers `nearest` the members of `clumps` nearest to `query`, each at its exact
/// cosine distance from its stored vector; returns how many were scored exactly.
///
/// A scan over the 4-bit codes estimates each member's cosine as q·c + q·o (c
/// the clump's centroid, o the member's offset from it, in codes). Members of a
/// clump lie close to each other, so the offsets are short and their codes
/// fine: the estimate is off by a few thousandths. The `SCORED_PER_RESULT` · n
/// members nearest by estimate are then scored exactly. This is approximate: a
/// member whose estimate puts it just past that many can be missed, where the
/// exact distances would have kept it; the scan reads a ninth of the bytes of
/// the stored vectors, which is what it waits on.
pub fn score_clumps(clumps: &[Arc<Clump>], query: &[f32], nearest: &mut NearestTexts) -> usize {
    let Some(query) = QueryCodes::new(query) else {
        return 0;
    };
    let wanted = members_scored_exactly(nearest.kept.n);
    // The scan in parts of about equal members, one a thread.
    let parts = scan_parts(clumps);
    let scanned: Vec<Smallest<Estimate>> = std::thread::scope(|scope| {
        let query = &query;
        let others: Vec<_> = parts[1..]
            .iter()
            .map(|&(from, to)| scope.spawn(move || scan_widest(clumps, from, to, query, wanted)))
            .collect();
        let mut scanned = vec![scan_widest(clumps, parts[0].0, parts[0].1, query, wanted)];
        // A part's thread only panics if scanning does, which it does not.
        scanned.extend(others.into_iter().filter_map(|h| h.join().ok()));
        scanned
    });
    let mut chosen = Smallest::new(wanted);
    for estimate in scanned.into_iter().flat_map(|part| part.kept.into_vec()) {
        chosen.offer(estimate);
    }
    pulp::Arch::new().dispatch(ScoreChosen {
        clumps,
        chosen: chosen.kept.into_vec(),
        query: &query,
        nearest,
    })
}

/// A member's estimated cosine distance and where it is (clump, row).
#[derive(Debug, Clone, Copy)]
struct Estimate {
    distance: f32,
    clump: u32,
    row: u32,
}

impl PartialEq for Estimate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Estimate {}

impl PartialOrd for Estimate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Estimate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then_with(|| (self.clump, self.row).cmp(&(other.clump, other.row)))
    }
}

/// Scores the chosen members exactly, with the widest vector instructions the
/// CPU has; returns how many.
struct ScoreChosen<'a> {
    clumps: &'a [Arc<Clump>],
    chosen: Vec<Estimate>,
    query: &'a QueryCodes,
    nearest: &'a mut NearestTexts,
}

impl pulp::WithSimd for ScoreChosen<'_> {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> usize {
        for estimate in &self.chosen {
            let clump = &self.clumps[estimate.clump as usize];
            let row = estimate.row as usize;
            self.nearest
                .offer(clump.keys[row], clump.distance(row, self.query));
        }
        self.chosen.len()
    }
}

/// Members from which the scan is split over threads (a thread costs tens of
/// microseconds; 16,384 members take ~0.4 ms to scan).
const PARALLEL_SCAN_MEMBERS: usize = 16_384;

/// The clump ranges `from..to` the scan's threads take: one per available core
/// (at most four) when there are enough members, of about equal members each.
fn scan_parts(clumps: &[Arc<Clump>]) -> Vec<(usize, usize)> {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores =
        *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)));
    let members: usize = clumps.iter().map(|c| c.len()).sum();
    let threads = if members >= PARALLEL_SCAN_MEMBERS {
        cores
    } else {
        1
    };
    let share = members.div_ceil(threads).max(1);
    let mut parts = Vec::with_capacity(threads);
    let (mut from, mut taken) = (0, 0);
    for (i, clump) in clumps.iter().enumerate() {
        taken += clump.len();
        if taken >= share && parts.len() + 1 < threads {
            parts.push((from, i + 1));
            from = i + 1;
            taken = 0;
        }
    }
    parts.push((from, clumps.len()));
    parts
}

/// The level the member scan runs at on this CPU, as `pulp` names it: on x86-64
/// `V4` (AVX-512), `V3` (AVX2 and FMA) or `Scalar` (the build's own baseline).
pub fn scan_level() -> String {
    let arch = format!("{:?}", pulp::Arch::new());
    arch.split('(').next().unwrap_or_default().to_owned()
}

/// The scan at the widest the CPU has: with AVX-512's or AVX2's byte
/// multiply-add where the CPU has them and the rows split into 64- or 32-byte
/// lanes (MiniLM's 384 dimensions do), else [`scan`] compiled (by `pulp`) for
/// each x86-64 level. The build itself targets plain x86-64.
fn scan_widest(
    clumps: &[Arc<Clump>],
    from: usize,
    to: usize,
    query: &QueryCodes,
    wanted: usize,
) -> Smallest<Estimate> {
    #[cfg(target_arch = "x86_64")]
    {
        let half = nibble_row(query.unit.len());
        let (low, high) = query.codes.split_at(half);
        if half.is_multiple_of(64) {
            if let Some(simd) = pulp::x86::V4::try_new() {
                return simd.vectorize(ScanWith {
                    rows: LanesAvx512::new(simd, low, high),
                    clumps,
                    from,
                    to,
                    query,
                    wanted,
                });
            }
        }
        if half.is_multiple_of(32) {
            if let Some(simd) = pulp::x86::V3::try_new() {
                return simd.vectorize(ScanWith {
                    rows: LanesAvx2::new(simd, low, high),
                    clumps,
                    from,
                    to,
                    query,
                    wanted,
                });
            }
        }
    }
    pulp::Arch::new().dispatch(ScanPart {
        clumps,
        from,
        to,
        query,
        wanted,
    })
}

/// The arguments of one [`scan`], for [`pulp::Arch::dispatch`].
struct ScanPart<'a> {
    clumps: &'a [Arc<Clump>],
    from: usize,
    to: usize,
    query: &'a QueryCodes,
    wanted: usize,
}

impl pulp::WithSimd for ScanPart<'_> {
    type Output = Smallest<Estimate>;

    // Inlined all the way down to the dot products, so they are compiled with
    // the instructions of the level being dispatched.
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Smallest<Estimate> {
        scan(self.clumps, self.from, self.to, self.query, self.wanted)
    }
}

/// Scans the codes of `clumps[from..to]`: the `wanted` members nearest by
/// estimate, each row's codes unpacked to bytes and multiplied out plainly.
#[inline(always)]
fn scan(
    clumps: &[Arc<Clump>],
    from: usize,
    to: usize,
    query: &QueryCodes,
    wanted: usize,
) -> Smallest<Estimate> {
    let half = nibble_row(query.unit.len());
    let mut unpacked = Unpacked {
        codes: &query.codes,
        bytes: vec![0u8; 2 * half],
    };
    scan_with(clumps, from, to, query, wanted, &mut unpacked)
}

/// The dot product of the query's codes and a row's stored codes (each 8 up).
trait RowDot {
    fn row_dot(&mut self, nibbles: &[u8]) -> i32;
}

/// [`RowDot`] plainly: the row unpacked to bytes, then [`dot_codes`].
struct Unpacked<'a> {
    codes: &'a [i8],
    bytes: Vec<u8>,
}

impl RowDot for Unpacked<'_> {
    #[inline(always)]
    fn row_dot(&mut self, nibbles: &[u8]) -> i32 {
        let (low, high) = self.bytes.split_at_mut(nibbles.len());
        for ((l, h), &byte) in low.iter_mut().zip(high.iter_mut()).zip(nibbles) {
            *l = byte & 15;
            *h = byte >> 4;
        }
        dot_codes(self.codes, &self.bytes)
    }
}

/// [`scan_with`] as one call, for `vectorize` of [`pulp::x86::V3`] or
/// [`pulp::x86::V4`], which compiles it with their instructions.
#[cfg(target_arch = "x86_64")]
struct ScanWith<'a, R> {
    rows: R,
    clumps: &'a [Arc<Clump>],
    from: usize,
    to: usize,
    query: &'a QueryCodes,
    wanted: usize,
}

#[cfg(target_arch = "x86_64")]
impl<R: RowDot> pulp::NullaryFnOnce for ScanWith<'_, R> {
    type Output = Smallest<Estimate>;

    // Inlined into the function `vectorize` compiles with the level's features,
    // down to the intrinsics.
    #[inline(always)]
    fn call(mut self) -> Smallest<Estimate> {
        scan_with(
            self.clumps,
            self.from,
            self.to,
            self.query,
            self.wanted,
            &mut self.rows,
        )
    }
}

/// [`RowDot`] with AVX-512: [`LanesAvx2`]'s work on 64 bytes of codes (128
/// dimensions) at a time. Needs rows of a multiple of 64 bytes.
#[cfg(target_arch = "x86_64")]
struct LanesAvx512 {
    simd: pulp::x86::V4,
    /// The query's codes for the low nibbles and for the high ones, 64 a lane.
    low: Vec<std::arch::x86_64::__m512i>,
    high: Vec<std::arch::x86_64::__m512i>,
}

#[cfg(target_arch = "x86_64")]
impl LanesAvx512 {
    fn new(simd: pulp::x86::V4, low: &[i8], high: &[i8]) -> LanesAvx512 {
        LanesAvx512 {
            simd,
            low: query_lanes::<64, _>(low),
            high: query_lanes::<64, _>(high),
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl RowDot for LanesAvx512 {
    #[inline(always)]
    fn row_dot(&mut self, nibbles: &[u8]) -> i32 {
        use std::arch::x86_64::__m512i;
        let (f, bw) = (self.simd.avx512f, self.simd.avx512bw);
        let nibble = f._mm512_set1_epi8(15);
        let ones = f._mm512_set1_epi16(1);
        let mut sums = f._mm512_setzero_si512();
        for ((bytes, low), high) in nibbles.chunks_exact(64).zip(&self.low).zip(&self.high) {
            let bytes: __m512i =
                pulp::bytemuck::cast(<[u8; 64]>::try_from(bytes).unwrap_or([8; 64]));
            let lows = f._mm512_and_si512(bytes, nibble);
            let highs = f._mm512_and_si512(bw._mm512_srli_epi16::<4>(bytes), nibble);
            // Each pair at most 2 · 15 · 127: no saturation.
            let pairs = bw._mm512_add_epi16(
                bw._mm512_maddubs_epi16(lows, *low),
                bw._mm512_maddubs_epi16(highs, *high),
            );
            sums = f._mm512_add_epi32(sums, bw._mm512_madd_epi16(pairs, ones));
        }
        f._mm512_reduce_add_epi32(sums)
    }
}

/// [`RowDot`] with AVX2: 32 bytes of codes (64 dimensions) at a time, split
/// into their low and high nibbles and multiplied with the query's codes, pairs
/// added, in two instructions (`vpmaddubsw`, `vpmaddwd`). Needs rows of a
/// multiple of 32 bytes.
#[cfg(target_arch = "x86_64")]
struct LanesAvx2 {
    simd: pulp::x86::V3,
    /// The query's codes for the low nibbles and for the high ones, 32 a lane.
    low: Vec<std::arch::x86_64::__m256i>,
    high: Vec<std::arch::x86_64::__m256i>,
}

#[cfg(target_arch = "x86_64")]
impl LanesAvx2 {
    fn new(simd: pulp::x86::V3, low: &[i8], high: &[i8]) -> LanesAvx2 {
        LanesAvx2 {
            simd,
            low: query_lanes::<32, _>(low),
            high: query_lanes::<32, _>(high),
        }
    }
}

/// Query codes as vector registers of `N` bytes each (a whole number of them:
/// the kernels are only chosen for rows that split so).
#[cfg(target_arch = "x86_64")]
fn query_lanes<const N: usize, L: pulp::bytemuck::Pod>(codes: &[i8]) -> Vec<L>
where
    [i8; N]: pulp::bytemuck::Pod,
{
    codes
        .chunks_exact(N)
        .map(|c| pulp::bytemuck::cast(<[i8; N]>::try_from(c).unwrap_or([0; N])))
        .collect()
}

#[cfg(target_arch = "x86_64")]
impl RowDot for LanesAvx2 {
    #[inline(always)]
    fn row_dot(&mut self, nibbles: &[u8]) -> i32 {
        use std::arch::x86_64::__m256i;
        let (avx, avx2) = (self.simd.avx, self.simd.avx2);
        let nibble = avx._mm256_set1_epi8(15);
        let ones = avx._mm256_set1_epi16(1);
        let mut sums = avx._mm256_setzero_si256();
        for ((bytes, low), high) in nibbles.chunks_exact(32).zip(&self.low).zip(&self.high) {
            let bytes: __m256i =
                pulp::bytemuck::cast(<[u8; 32]>::try_from(bytes).unwrap_or([8; 32]));
            let lows = avx2._mm256_and_si256(bytes, nibble);
            let highs = avx2._mm256_and_si256(avx2._mm256_srli_epi16::<4>(bytes), nibble);
            // Each pair at most 2 · 15 · 127: no saturation.
            let pairs = avx2._mm256_add_epi16(
                avx2._mm256_maddubs_epi16(lows, *low),
                avx2._mm256_maddubs_epi16(highs, *high),
            );
            sums = avx2._mm256_add_epi32(sums, avx2._mm256_madd_epi16(pairs, ones));
        }
        let sums: [i32; 8] = pulp::bytemuck::cast(sums);
        sums.iter().sum()
    }
}

/// The scan itself, with `rows` for the dot products.
#[inline(always)]
fn scan_with(
    clumps: &[Arc<Clump>],
    from: usize,
    to: usize,
    query: &QueryCodes,
    wanted: usize,
    rows: &mut impl RowDot,
) -> Smallest<Estimate> {
    let dimensions = query.unit.len();
    let half = nibble_row(dimensions);
    let mut nearest = Smallest::new(wanted);
    for (c, clump) in clumps.iter().enumerate().take(to).skip(from) {
        if clump.dimensions != dimensions || clump.is_empty() {
            continue;
        }
        let to_centroid = dot(&query.unit, &clump.centroid);
        for (row, nibbles) in clump.nibbles.chunks_exact(half).enumerate() {
            let codes_dot = rows.row_dot(nibbles) - 8 * query.code_sum;
            let cosine = to_centroid + codes_dot as f32 * query.scale * clump.scales[row];
            nearest.offer(Estimate {
                distance: 1.0 - cosine,
                clump: c as u32,
                row: row as u32,
            });
        }
    }
    nearest
}

/// The `n` smallest items offered: a max-heap of at most `n`, the largest kept
/// on top, to be pushed out.
#[derive(Debug)]
struct Smallest<T> {
    n: usize,
    kept: BinaryHeap<T>,
}

impl<T: Ord> Smallest<T> {
    fn new(n: usize) -> Smallest<T> {
        Smallest {
            n,
            kept: BinaryHeap::with_capacity(n + 1),
        }
    }

    fn offer(&mut self, item: T) {
        if self.kept.len() < self.n {
            self.kept.push(item);
        } else if self.kept.peek().is_some_and(|largest| item < *largest) {
            self.kept.pop();
            self.kept.push(item);
        }
    }

    /// The kept items, in no order.
    fn iter(&self) -> impl Iterator<Item = &T> {
        self.kept.iter()
    }

    /// The kept items, smallest first.
    fn into_sorted(self) -> Vec<T> {
        self.kept.into_sorted_vec()
    }
}

/// The dot product of the query's codes and a row's codes: a member's unpacked
/// 4-bit codes (0..=15) or a representative's 8-bit ones (each product at most
/// 127 · 127: an i32 holds 130,000 dimensions of them), as far as the shorter
/// goes. Written as a plain sum, which integers may add in any order, so the
/// compiler pairs the products up in multiply-add instructions.
#[inline(always)]
fn dot_codes<T: Copy + Into<i32>>(a: &[i8], b: &[T]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * y.into())
        .sum()
}

/// The dot product, eight lanes at a time so the compiler keeps it in vector
/// registers.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// A text and its cosine distance to the query.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    distance: f64,
    key: TextKey,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then_with(|| self.key.cmp(&other.key))
    }
}

/// The `n` nearest texts offered so far.
#[derive(Debug)]
pub struct NearestTexts {
    kept: Smallest<Candidate>,
}

impl NearestTexts {
    /// Keeps the `n` nearest.
    pub fn new(n: usize) -> NearestTexts {
        NearestTexts {
            kept: Smallest::new(n),
        }
    }

    /// Offers `key` at `distance`.
    pub fn offer(&mut self, key: TextKey, distance: f64) {
        self.kept.offer(Candidate { distance, key });
    }

    /// The distances of the texts kept so far, in no order.
    pub fn distances(&self) -> impl Iterator<Item = f64> + '_ {
        self.kept.iter().map(|c| c.distance)
    }

    /// The kept texts, nearest first, with their distances.
    pub fn into_sorted(self) -> Vec<(TextKey, f64)> {
        self.kept
            .into_sorted()
            .into_iter()
            .map(|c| (c.key, c.distance))
            .collect()
    }
}

/// Every clump's revision at one generation of the clumps
/// (`embedding_generations`).
#[derive(Debug)]
pub struct ClumpRevisions {
    generation: i64,
    revisions: HashMap<TextKey, i64>,
}

impl ClumpRevisions {
    /// The revisions read at `generation`.
    pub fn new(generation: i64, revisions: HashMap<TextKey, i64>) -> ClumpRevisions {
        ClumpRevisions {
            generation,
            revisions,
        }
    }

    /// The generation they were read at.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// The revision of the clump of `representative` (none: it has no members).
    pub fn get(&self, representative: &TextKey) -> Option<i64> {
        self.revisions.get(representative).copied()
    }
}

/// The representatives at one generation (`embedding_generations`): their keys
/// and vectors, and what a search ranks their clumps by.
#[derive(Debug, Clone)]
pub struct Representatives {
    generation: i64,
    keys: Vec<TextKey>,
    dimensions: usize,
    /// `keys.len()` vectors of `dimensions` each, one after another.
    vectors: Vec<f32>,
    /// 1 / |v| of each vector.
    inverse_norms: Vec<f32>,
    /// What each clump is ranked by, in 8-bit codes, row by row: the mean of the
    /// directions of the representative and its members where the cache held the
    /// clump when these were made ([`Representatives::centred`]), else the
    /// representative's direction.
    codes: Vec<i8>,
    /// Each row's scale: max |x_i| / 127.
    scales: Vec<f32>,
    /// Each key's row.
    rows: HashMap<TextKey, usize>,
}

impl Representatives {
    /// The representatives read at `generation`, each clump ranked by its
    /// representative. Vectors of another length than the first are left out.
    pub fn new(generation: i64, representatives: Vec<(TextKey, Vec<f32>)>) -> Representatives {
        let dimensions = representatives.first().map_or(0, |(_, v)| v.len());
        let rows = representatives.len();
        let mut read = Representatives {
            generation,
            keys: Vec::with_capacity(rows),
            dimensions,
            vectors: Vec::with_capacity(rows * dimensions),
            inverse_norms: Vec::with_capacity(rows),
            codes: Vec::with_capacity(rows * dimensions),
            scales: Vec::with_capacity(rows),
            rows: HashMap::with_capacity(rows),
        };
        for (key, vector) in representatives {
            if vector.len() != dimensions {
                continue;
            }
            let inverse_norm = inverse_norm(&vector);
            let unit: Vec<f32> = vector.iter().map(|x| x * inverse_norm).collect();
            let (codes, scale) = byte_codes(&unit);
            read.codes.extend_from_slice(&codes);
            read.scales.push(scale);
            read.inverse_norms.push(inverse_norm);
            read.rows.insert(key, read.keys.len());
            read.keys.push(key);
            read.vectors.extend_from_slice(&vector);
        }
        read
    }

    /// The row of the representative `key`, if it is one.
    pub fn row_of(&self, key: &TextKey) -> Option<usize> {
        self.rows.get(key).copied()
    }

    /// The same, each clump that `cache` holds ranked by its centroid: the mean of
    /// the directions of its representative and members. A representative is the
    /// first text of its clump seen, often near its edge; on the million-text
    /// benchmark, opening clumps by centroid found recall 0.955 in 67,000 members
    /// where by representative it took 97,000 (BENCHMARKS.md).
    pub fn centred(&self, cache: &ClumpCache) -> Representatives {
        let mut centred = self.clone();
        let dimensions = self.dimensions.max(1);
        for (row, key) in self.keys.iter().enumerate() {
            let Some(clump) = cache.peek(key) else {
                continue;
            };
            if clump.is_empty() || clump.dimensions != self.dimensions {
                continue;
            }
            let members = clump.len() as f32;
            let vector = &self.vectors[row * dimensions..(row + 1) * dimensions];
            let mean: Vec<f32> = vector
                .iter()
                .zip(clump.centroid())
                .map(|(v, c)| (v * self.inverse_norms[row] + c * members) / (members + 1.0))
                .collect();
            let (codes, scale) = byte_codes(&mean);
            centred.codes[row * dimensions..(row + 1) * dimensions].copy_from_slice(&codes);
            centred.scales[row] = scale;
        }
        centred
    }

    /// The generation they were read at.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every representative's row, the clump nearest to `query` first (none for
    /// the zero vector or another dimension).
    pub fn ranked(&self, query: &[f32]) -> Vec<usize> {
        let Some(query) = QueryCodes::new(query).filter(|q| q.unit.len() == self.dimensions) else {
            return Vec::new();
        };
        let mut scored: Vec<(f32, usize)> = pulp::Arch::new().dispatch(RankClumps {
            representatives: self,
            query: &query,
        });
        scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().map(|(_, row)| row).collect()
    }

    /// The key of the representative at `row`.
    pub fn key(&self, row: usize) -> TextKey {
        self.keys[row]
    }

    /// The exact cosine distances of the representatives at `rows` to `query` (1
    /// for the zero vector or another dimension).
    pub fn distances(&self, rows: &[usize], query: &[f32]) -> Vec<f64> {
        let dimensions = self.dimensions;
        let norm = dot(query, query).sqrt();
        if norm == 0.0 || !norm.is_finite() || query.len() != dimensions {
            return vec![1.0; rows.len()];
        }
        rows.iter()
            .map(|&row| {
                let vector = &self.vectors[row * dimensions..(row + 1) * dimensions];
                let similarity = f64::from(dot(query, vector)) * f64::from(self.inverse_norms[row])
                    / f64::from(norm);
                1.0 - similarity.clamp(-1.0, 1.0)
            })
            .collect()
    }
}

/// `x` as 8-bit codes, `round(x_i / scale)` with scale max |x_i| / 127, and the
/// scale.
fn byte_codes(x: &[f32]) -> (Vec<i8>, f32) {
    let largest = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = largest / BYTE_CODE_MAX;
    let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    (
        x.iter().map(|v| (v * inverse).round() as i8).collect(),
        scale,
    )
}

/// Scores located members exactly, with the widest vector instructions the CPU
/// has.
struct ScoreLocated<'a> {
    located: &'a [(TextKey, Arc<Clump>, u32)],
    query: &'a QueryCodes,
}

impl pulp::WithSimd for ScoreLocated<'_> {
    type Output = Vec<(TextKey, f64)>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<(TextKey, f64)> {
        self.located
            .iter()
            .map(|(key, clump, row)| (*key, clump.distance(*row as usize, self.query)))
            .collect()
    }
}

/// Scores every clump's ranking codes against the query, with the widest vector
/// instructions the CPU has: (score, row).
struct RankClumps<'a> {
    representatives: &'a Representatives,
    query: &'a QueryCodes,
}

impl pulp::WithSimd for RankClumps<'_> {
    type Output = Vec<(f32, usize)>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<(f32, usize)> {
        let representatives = self.representatives;
        representatives
            .codes
            .chunks_exact(representatives.dimensions.max(1))
            .enumerate()
            .map(|(row, codes)| {
                let products = dot_codes(&self.query.codes, codes);
                (
                    products as f32 * self.query.scale * representatives.scales[row],
                    row,
                )
            })
            .collect()
    }
}

/// How the cache has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClumpCacheStats {
    /// Clumps held now.
    pub clumps: usize,
    /// Their members.
    pub members: usize,
    /// Bytes they take.
    pub bytes: usize,
    /// Clumps a search found here at the revision it needed.
    pub hits: u64,
    /// Clumps it had to read (absent, or another revision).
    pub misses: u64,
    /// Representatives held (their vectors do not count against the capacity:
    /// a few megabytes for a million texts).
    pub representatives: usize,
}

/// Clumps' member vectors kept between searches, at most `capacity` bytes of
/// them. Shared by the searches of one server (`Arc`).
#[derive(Debug)]
pub struct ClumpCache {
    capacity: usize,
    held: Mutex<Held>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Whether a fill is reading clumps now (one at a time).
    filling: AtomicBool,
    /// The representatives as last read.
    representatives: Mutex<Option<Arc<Representatives>>>,
    /// The clumps' revisions as last read.
    revisions: Mutex<Option<Arc<ClumpRevisions>>>,
    /// Members a search scans (see [`ClumpCache::scan_members`]).
    scan_members: usize,
}

/// Members a search scans unless told otherwise: on the million-text benchmark
/// that is recall@50 ~0.96 (BENCHMARKS.md).
pub const DEFAULT_SCAN_MEMBERS: usize = 75_000;

#[derive(Debug, Default)]
struct Held {
    clumps: HashMap<TextKey, HeldClump>,
    /// Where each held member is: its clump and row.
    texts: HashMap<TextKey, (Arc<Clump>, u32)>,
    /// Representatives whose clumps a search missed, to be read.
    wanted: HashSet<TextKey>,
    /// Clumps read once and found larger than the whole capacity, by revision:
    /// not wanted again until they change.
    too_large: HashMap<TextKey, i64>,
    bytes: usize,
    members: usize,
    /// Counts uses, to order the clumps by last use.
    clock: u64,
}

#[derive(Debug)]
struct HeldClump {
    clump: Arc<Clump>,
    last_used: u64,
}

impl ClumpCache {
    /// A cache of at most `capacity` bytes of member vectors.
    pub fn new(capacity: usize) -> ClumpCache {
        ClumpCache {
            capacity,
            held: Mutex::new(Held::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            filling: AtomicBool::new(false),
            representatives: Mutex::new(None),
            revisions: Mutex::new(None),
            scan_members: DEFAULT_SCAN_MEMBERS,
        }
    }

    /// The same cache, its searches scanning `members` members.
    pub fn with_scan_members(mut self, members: usize) -> ClumpCache {
        self.scan_members = members.max(1);
        self
    }

    /// How many members a search scans: it opens the clumps nearest to the text,
    /// nearest first, until they hold that many (a clump the cache does not hold
    /// counts as `members / ef_search`, so a cold cache opens about `ef_search`).
    pub fn scan_members(&self) -> usize {
        self.scan_members
    }

    /// The clump of `representative` at whatever revision is held, without
    /// counting a hit or a miss: for ranking, not for scoring.
    pub fn peek(&self, representative: &TextKey) -> Option<Arc<Clump>> {
        self.lock()
            .clumps
            .get(representative)
            .map(|h| Arc::clone(&h.clump))
    }

    /// The exact cosine distances to `query` of the `texts` whose vectors it holds
    /// (members of held clumps, and representatives), and the texts it does not
    /// hold. A text's vector never changes (its key is the hash of its model and
    /// text), so any copy held is current.
    pub fn distances(
        &self,
        texts: &[TextKey],
        query: &[f32],
    ) -> (Vec<(TextKey, f64)>, Vec<TextKey>) {
        let Some(codes) = QueryCodes::new(query) else {
            return (Vec::new(), texts.to_vec());
        };
        let representatives = self.representatives();
        let (mut located, mut missing) = (Vec::with_capacity(texts.len()), Vec::new());
        {
            let held = self.lock();
            for key in texts {
                match held.texts.get(key) {
                    Some((clump, row)) => located.push((*key, Arc::clone(clump), *row)),
                    None => missing.push(*key),
                }
            }
        }
        let mut found: Vec<(TextKey, f64)> = pulp::Arch::new().dispatch(ScoreLocated {
            located: &located,
            query: &codes,
        });
        if let Some(representatives) = representatives {
            let (mut held, mut rows) = (Vec::new(), Vec::new());
            missing.retain(|key| match representatives.row_of(key) {
                Some(row) => {
                    held.push(*key);
                    rows.push(row);
                    false
                }
                None => true,
            });
            found.extend(
                held.into_iter()
                    .zip(representatives.distances(&rows, query)),
            );
        }
        (found, missing)
    }

    /// Ranks the representatives' clumps by the centroids of the clumps held now
    /// ([`Representatives::centred`]); for after a fill.
    pub fn centre_representatives(&self) {
        if let Some(representatives) = self.representatives() {
            self.set_representatives(Arc::new(representatives.centred(self)));
        }
    }

    /// The clumps' revisions as last read, if they were.
    pub fn revisions(&self) -> Option<Arc<ClumpRevisions>> {
        self.revisions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Keeps `revisions` as the last read.
    pub fn set_revisions(&self, revisions: Arc<ClumpRevisions>) {
        *self
            .revisions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(revisions);
    }

    /// The representatives as last read, if they were.
    pub fn representatives(&self) -> Option<Arc<Representatives>> {
        self.representatives
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Keeps `representatives` as the last read.
    pub fn set_representatives(&self, representatives: Arc<Representatives>) {
        *self
            .representatives
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(representatives);
    }

    /// Its capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The clump of `representative` if held at `revision`; counts a hit or a
    /// miss, and a missed clump is wanted.
    pub fn get(&self, representative: &TextKey, revision: i64) -> Option<Arc<Clump>> {
        let mut held = self.lock();
        held.clock += 1;
        let now = held.clock;
        let found = held
            .clumps
            .get_mut(representative)
            .filter(|h| h.clump.revision == revision)
            .map(|h| {
                h.last_used = now;
                Arc::clone(&h.clump)
            });
        if found.is_some() {
            self.hits.fetch_add(1, AtomicOrdering::Relaxed);
        } else {
            self.misses.fetch_add(1, AtomicOrdering::Relaxed);
            if held.too_large.get(representative) != Some(&revision) {
                held.wanted.insert(*representative);
            }
        }
        found
    }

    /// Wants the clumps of `representatives` (a warm-up: [`crate::vectors::warm_clump_cache`]),
    /// those held or known too large aside.
    pub fn want(&self, representatives: impl IntoIterator<Item = TextKey>) {
        let mut held = self.lock();
        for representative in representatives {
            if !held.clumps.contains_key(&representative)
                && !held.too_large.contains_key(&representative)
            {
                held.wanted.insert(representative);
            }
        }
    }

    /// Whether a search missed clumps that no fill has read yet.
    pub fn has_wanted(&self) -> bool {
        !self.lock().wanted.is_empty()
    }

    /// The wanted representatives, up to `at_most` of them, no longer wanted.
    pub fn take_wanted(&self, at_most: usize) -> Vec<TextKey> {
        let mut held = self.lock();
        let taken: Vec<TextKey> = held.wanted.iter().take(at_most).copied().collect();
        for key in &taken {
            held.wanted.remove(key);
        }
        taken
    }

    /// The right to fill the cache, unless another fill has it: held until the
    /// returned turn is dropped.
    pub fn fill_turn(&self) -> Option<FillTurn<'_>> {
        (!self.filling.swap(true, AtomicOrdering::AcqRel)).then_some(FillTurn { cache: self })
    }

    /// Keeps `clump` as `representative`'s, in place of any other revision, then
    /// drops the least recently used clumps until the rest fit. A clump larger
    /// than the whole capacity is not kept.
    pub fn insert(&self, representative: TextKey, clump: Arc<Clump>) {
        let bytes = clump.bytes();
        let mut held = self.lock();
        if bytes > self.capacity {
            held.too_large.insert(representative, clump.revision);
            return;
        }
        held.too_large.remove(&representative);
        held.clock += 1;
        let last_used = held.clock;
        let members = clump.len();
        for (row, key) in clump.keys.iter().enumerate() {
            held.texts.insert(*key, (Arc::clone(&clump), row as u32));
        }
        if let Some(old) = held
            .clumps
            .insert(representative, HeldClump { clump, last_used })
        {
            held.forget_texts(&old.clump);
            held.bytes -= old.clump.bytes();
            held.members -= old.clump.len();
        }
        held.bytes += bytes;
        held.members += members;
        if held.bytes > self.capacity {
            held.evict_to(self.capacity);
        }
    }

    /// What it holds and how it has done.
    pub fn stats(&self) -> ClumpCacheStats {
        let held = self.lock();
        ClumpCacheStats {
            clumps: held.clumps.len(),
            members: held.members,
            bytes: held.bytes,
            hits: self.hits.load(AtomicOrdering::Relaxed),
            misses: self.misses.load(AtomicOrdering::Relaxed),
            representatives: self.representatives().map_or(0, |r| r.len()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while holding the lock leaves the maps consistent (each update
        // is whole before the next), so the cache goes on.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One fill's hold on a [`ClumpCache`] ([`ClumpCache::fill_turn`]).
#[derive(Debug)]
pub struct FillTurn<'a> {
    cache: &'a ClumpCache,
}

impl Drop for FillTurn<'_> {
    fn drop(&mut self) {
        self.cache.filling.store(false, AtomicOrdering::Release);
    }
}

impl Held {
    /// Drops the least recently used clumps until at most `capacity` bytes are
    /// held (down to 90% of it, so the next few inserts do not each sort again).
    fn evict_to(&mut self, capacity: usize) {
        let target = capacity - capacity / 10;
        let mut by_use: Vec<(u64, TextKey)> = self
            .clumps
            .iter()
            .map(|(key, h)| (h.last_used, *key))
            .collect();
        by_use.sort_unstable();
        for (_, key) in by_use {
            if self.bytes <= target {
                break;
            }
            if let Some(old) = self.clumps.remove(&key) {
                self.forget_texts(&old.clump);
                self.bytes -= old.clump.bytes();
                self.members -= old.clump.len();
            }
        }
    }

    /// Drops the index entries that point into `clump` (not those its members
    /// got from a newer copy).
    fn forget_texts(&mut self, clump: &Arc<Clump>) {
        for key in &clump.keys {
            if self
                .texts
                .get(key)
                .is_some_and(|(held, _)| Arc::ptr_eq(held, clump))
            {
                self.texts.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> TextKey {
        TextKey::from_stored(&[i; 32]).unwrap()
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    }

    #[test]
    fn dot_matches_the_plain_sum_for_any_length() {
        for len in [0, 1, 7, 8, 9, 384] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "length {len}");
        }
    }

    #[test]
    fn a_clump_scores_its_members_by_cosine_distance() {
        let clump = Arc::new(Clump::new(
            7,
            vec![
                (key(1), unit(&[1.0, 0.0, 0.0])),
                (key(2), unit(&[1.0, 1.0, 0.0])),
                (key(3), vec![0.0, 0.0, 2.0]), // not unit length: cosine still 0
                (key(4), vec![1.0, 0.0]),      // another dimension: left out
            ],
        ));
        assert_eq!(clump.len(), 3);
        let mut nearest = NearestTexts::new(10);
        assert_eq!(score_clumps(&[clump], &[2.0, 0.0, 0.0], &mut nearest), 3);
        let found = nearest.into_sorted();
        let keys: Vec<TextKey> = found.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![key(1), key(2), key(3)]);
        assert!(found[0].1.abs() < 1e-6);
        assert!((found[1].1 - (1.0 - 0.5f64.sqrt())).abs() < 1e-6);
        assert!((found[2].1 - 1.0).abs() < 1e-6);
    }

    /// Deterministic noise in [-0.5, 0.5) (a linear congruential generator).
    fn noise(mut seed: u64) -> impl FnMut() -> f32 {
        move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        }
    }

    /// `count` members of `dimensions`, each `centre` plus `spread` of noise, as
    /// unit vectors: a tight clump, as near copies are.
    fn tight_members(
        noise: &mut impl FnMut() -> f32,
        centre: &[f32],
        spread: f32,
        count: u32,
    ) -> Vec<(TextKey, Vec<f32>)> {
        (0..count)
            .map(|i| {
                let mut bytes = [0u8; 32];
                bytes[..4].copy_from_slice(&i.to_be_bytes());
                let v: Vec<f32> = centre.iter().map(|c| c + spread * noise()).collect();
                (TextKey::from_stored(&bytes).unwrap(), unit(&v))
            })
            .collect()
    }

    #[test]
    fn the_estimates_are_close_to_the_exact_cosine() {
        // 389 dimensions: odd, so the last high nibble is padding.
        let mut noise = noise(3);
        let centre: Vec<f32> = (0..389).map(|_| noise()).collect();
        let members = tight_members(&mut noise, &centre, 0.3, 300);
        // Leaning one way, so an error in either half's codes would show as bias.
        let query: Vec<f32> = (0..389).map(|_| noise() + 0.3).collect();
        let query_unit = unit(&query);
        let clumps = vec![Arc::new(Clump::new(1, members.clone()))];
        let codes = QueryCodes::new(&query).unwrap();
        let estimates = scan(&clumps, 0, 1, &codes, members.len()).into_sorted();
        assert_eq!(estimates.len(), members.len());
        // Rounding errs either way: off by little, and by nothing on average.
        let mut bias = 0.0f32;
        for estimate in &estimates {
            let exact = 1.0 - dot(&query_unit, &members[estimate.row as usize].1);
            bias += (estimate.distance - exact) / members.len() as f32;
            assert!(
                (estimate.distance - exact).abs() < 0.01,
                "row {}: {} vs {exact}",
                estimate.row,
                estimate.distance
            );
        }
        assert!(bias.abs() < 5e-4, "errs one way: {bias}");
    }

    #[test]
    fn the_code_scan_finds_the_exact_nearest_of_tight_clumps() {
        // Many members within the estimates' error of each other; in two clumps,
        // with enough members for the scan to split over threads.
        let dimensions = 384;
        let mut noise = noise(7);
        let centre: Vec<f32> = (0..dimensions).map(|_| noise()).collect();
        let members = tight_members(&mut noise, &centre, 0.3, 20_000);
        let query: Vec<f32> = centre.iter().map(|c| c + 0.2 * noise()).collect();
        let query_unit = unit(&query);
        let mut exact: Vec<(f64, TextKey)> = members
            .iter()
            .map(|(k, v)| (1.0 - f64::from(dot(&query_unit, v)), *k))
            .collect();
        exact.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (first, second) = members.split_at(7_000);
        let clumps = vec![
            Arc::new(Clump::new(1, first.to_vec())),
            Arc::new(Clump::new(2, second.to_vec())),
        ];
        let mut nearest = NearestTexts::new(50);
        let scored = score_clumps(&clumps, &query, &mut nearest);
        assert_eq!(
            scored,
            50 * SCORED_PER_RESULT,
            "the scan ruled the rest out"
        );
        let found = nearest.into_sorted();
        assert_eq!(found.len(), 50);
        let want: HashSet<TextKey> = exact[..50].iter().map(|(_, k)| *k).collect();
        let hits = found.iter().filter(|(k, _)| want.contains(k)).count();
        assert!(hits >= 49, "recall@50 {hits}/50");
        let exact_of: HashMap<TextKey, f64> = exact.iter().map(|(d, k)| (*k, *d)).collect();
        for (key, distance) in &found {
            assert!((distance - exact_of[key]).abs() < 1e-5, "scored exactly");
        }
    }

    #[test]
    fn the_scan_at_the_cpus_level_estimates_as_the_plain_scan_does() {
        // The AVX-512 and AVX2 scans (384 dimensions: rows of 3 lanes of 64 bytes,
        // 6 of 32) and the dispatched one (389: odd, with tails past the vector
        // lanes) compute the
        // same integer dot products and the same f32 operations as the plain
        // scan, so each member's estimate must come out bit for bit the same.
        for dimensions in [384, 389] {
            let mut noise = noise(11);
            let members: Vec<(TextKey, Vec<f32>)> = (0..500u32)
                .map(|i| {
                    let mut bytes = [0u8; 32];
                    bytes[..4].copy_from_slice(&i.to_be_bytes());
                    let v: Vec<f32> = (0..dimensions).map(|_| noise()).collect();
                    (TextKey::from_stored(&bytes).unwrap(), unit(&v))
                })
                .collect();
            let clumps = vec![Arc::new(Clump::new(1, members))];
            let query: Vec<f32> = (0..dimensions).map(|_| noise()).collect();
            let query = QueryCodes::new(&query).unwrap();
            let bits = |part: Smallest<Estimate>| -> Vec<(u32, u32)> {
                part.into_sorted()
                    .iter()
                    .map(|e| (e.distance.to_bits(), e.row))
                    .collect()
            };
            let plain = bits(scan(&clumps, 0, 1, &query, 100));
            assert_eq!(plain.len(), 100);
            let widest = bits(scan_widest(&clumps, 0, 1, &query, 100));
            assert_eq!(widest, plain, "{dimensions}");
            // Where the CPU has AVX-512 the widest is that; AVX2 on its own too.
            #[cfg(target_arch = "x86_64")]
            if let (Some(simd), 384) = (pulp::x86::V3::try_new(), dimensions) {
                let (low, high) = query.codes.split_at(192);
                let avx2 = simd.vectorize(ScanWith {
                    rows: LanesAvx2::new(simd, low, high),
                    clumps: &clumps,
                    from: 0,
                    to: 1,
                    query: &query,
                    wanted: 100,
                });
                assert_eq!(bits(avx2), plain);
            }
        }
        let level = scan_level();
        if cfg!(target_arch = "x86_64") {
            assert!(["V4", "V3", "Scalar"].contains(&level.as_str()), "{level}");
        } else {
            assert!(!level.is_empty());
        }
    }

    #[test]
    fn the_scan_splits_into_parts_of_about_equal_members() {
        let clump = |members: usize| {
            let rows = (0..members)
                .map(|i| (key((i % 250) as u8), vec![1.0f32, 0.0]))
                .collect();
            Arc::new(Clump::new(1, rows))
        };
        let small = vec![clump(10), clump(20)];
        assert_eq!(scan_parts(&small), vec![(0, 2)], "too few members to split");
        let large: Vec<Arc<Clump>> = (0..8).map(|_| clump(4096)).collect();
        let parts = scan_parts(&large);
        assert_eq!(parts.first().map(|p| p.0), Some(0));
        assert_eq!(parts.last().map(|p| p.1), Some(8));
        assert!(parts.windows(2).all(|w| w[0].1 == w[1].0), "{parts:?}");
    }

    #[test]
    fn representatives_are_ranked_by_their_codes_and_measured_exactly() {
        let mut noise = noise(5);
        let read: Vec<(TextKey, Vec<f32>)> = (0..200u8)
            .map(|i| (key(i), (0..384).map(|_| noise()).collect()))
            .collect();
        let query: Vec<f32> = (0..384).map(|_| noise()).collect();
        let query_unit = unit(&query);
        let mut exact: Vec<(f64, TextKey)> = read
            .iter()
            .map(|(k, v)| (1.0 - f64::from(dot(&query_unit, &unit(v))), *k))
            .collect();
        exact.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut with_another_length = read.clone();
        with_another_length.push((key(250), vec![1.0; 3]));
        let representatives = Representatives::new(9, with_another_length);
        assert_eq!(
            (representatives.generation(), representatives.len()),
            (9, 200)
        );
        let ranked = representatives.ranked(&query);
        assert_eq!(ranked.len(), 200);
        // 8-bit codes put the nearest ten first (random directions lie further
        // apart than the codes err).
        let first: HashSet<TextKey> = ranked[..10]
            .iter()
            .map(|&r| representatives.key(r))
            .collect();
        let want: HashSet<TextKey> = exact[..10].iter().map(|(_, k)| *k).collect();
        assert_eq!(first, want);
        for &row in &ranked[..10] {
            let key = representatives.key(row);
            let (want, _) = exact.iter().find(|(_, k)| *k == key).unwrap();
            assert!((representatives.distances(&[row], &query)[0] - want).abs() < 1e-5);
        }
        assert!(representatives.ranked(&[0.0; 384]).is_empty());
        assert!(representatives.ranked(&[1.0; 3]).is_empty());
    }

    #[test]
    fn a_held_clump_is_ranked_by_its_centroid() {
        // Representative 1 lies along x, its nine members along y; representative
        // 2 at (0.6, 0.8). For a query along y, 2 is nearer than 1 itself, but 1's
        // clump is nearer once ranked by its centroid ((x + 9y) / 10: 0.9 > 0.8).
        let representatives = Representatives::new(
            1,
            vec![(key(1), vec![1.0, 0.0, 0.0]), (key(2), vec![0.6, 0.8, 0.0])],
        );
        let query = [0.0, 1.0, 0.0];
        let order = |r: &Representatives| -> Vec<TextKey> {
            r.ranked(&query).into_iter().map(|row| r.key(row)).collect()
        };
        assert_eq!(order(&representatives), vec![key(2), key(1)]);
        let cache = ClumpCache::new(1 << 20);
        let members = (10..19).map(|i| (key(i), vec![0.0, 1.0, 0.0])).collect();
        cache.insert(key(1), Arc::new(Clump::new(1, members)));
        cache.set_representatives(Arc::new(representatives));
        cache.centre_representatives();
        let centred = cache.representatives().unwrap();
        assert_eq!(order(&centred), vec![key(1), key(2)]);
        assert!(
            (centred.distances(&[0], &query)[0] - 1.0).abs() < 1e-9,
            "its own distance"
        );
        assert_eq!(
            cache.stats().hits + cache.stats().misses,
            0,
            "peeks count nothing"
        );
    }

    #[test]
    fn nearest_texts_keeps_only_the_n_nearest() {
        let mut nearest = NearestTexts::new(2);
        for (i, d) in [0.5, 0.1, 0.9, 0.3, 0.2].into_iter().enumerate() {
            nearest.offer(key(i as u8), d);
        }
        assert_eq!(nearest.into_sorted(), vec![(key(1), 0.1), (key(4), 0.2)]);
    }

    #[test]
    fn the_cache_answers_only_for_the_revision_it_holds() {
        let cache = ClumpCache::new(1 << 20);
        let clump = Arc::new(Clump::new(3, vec![(key(1), vec![1.0, 0.0])]));
        assert!(cache.get(&key(9), 3).is_none());
        cache.insert(key(9), clump);
        assert!(cache.get(&key(9), 3).is_some());
        assert!(
            cache.get(&key(9), 4).is_none(),
            "another revision is a miss"
        );
        cache.insert(key(9), Arc::new(Clump::new(4, vec![])));
        assert_eq!(cache.get(&key(9), 4).map(|c| c.len()), Some(0));
        let stats = cache.stats();
        assert_eq!((stats.clumps, stats.members), (1, 0));
        assert_eq!((stats.hits, stats.misses), (2, 2));
    }

    #[test]
    fn missed_clumps_are_wanted_until_taken() {
        let cache = ClumpCache::new(1 << 20);
        assert!(!cache.has_wanted());
        assert!(cache.get(&key(1), 1).is_none());
        assert!(cache.get(&key(2), 1).is_none());
        assert!(cache.has_wanted());
        let mut taken = cache.take_wanted(1);
        taken.extend(cache.take_wanted(10));
        taken.sort();
        assert_eq!(taken, vec![key(1), key(2)]);
        assert!(!cache.has_wanted());
    }

    #[test]
    fn a_warm_up_wants_only_the_clumps_not_held() {
        let cache = ClumpCache::new(1 << 20);
        cache.insert(
            key(1),
            Arc::new(Clump::new(1, vec![(key(2), vec![1.0, 0.0])])),
        );
        cache.want([key(1), key(3)]);
        assert_eq!(cache.take_wanted(10), vec![key(3)]);
    }

    #[test]
    fn a_clump_s_size_is_known_before_it_is_read() {
        let members: Vec<_> = (0..5).map(|i| (key(i), vec![0.25f32; 384])).collect();
        assert_eq!(Clump::new(1, members).bytes(), Clump::bytes_of(5, 384));
    }

    #[test]
    fn one_fill_at_a_time() {
        let cache = ClumpCache::new(1 << 20);
        let turn = cache.fill_turn();
        assert!(turn.is_some());
        assert!(cache.fill_turn().is_none(), "taken");
        drop(turn);
        assert!(cache.fill_turn().is_some(), "given back");
    }

    #[test]
    fn the_least_recently_used_clumps_go_first() {
        let member = |i: u8| (key(i), vec![0.5f32; 64]);
        let one = Clump::new(1, vec![member(1)]).bytes();
        let cache = ClumpCache::new(one * 3);
        for i in 0..3 {
            cache.insert(key(i), Arc::new(Clump::new(1, vec![member(i)])));
        }
        assert!(cache.get(&key(0), 1).is_some(), "0 used last now");
        cache.insert(key(3), Arc::new(Clump::new(1, vec![member(3)])));
        let stats = cache.stats();
        assert!(stats.bytes <= cache.capacity(), "{stats:?}");
        assert!(cache.get(&key(0), 1).is_some(), "recently used: kept");
        assert!(cache.get(&key(3), 1).is_some(), "just inserted: kept");
        assert!(
            cache.get(&key(1), 1).is_none(),
            "least recently used: dropped"
        );
        // The index of texts follows: members of dropped clumps are not found.
        let (found, missing) = cache.distances(&[key(0), key(1), key(3)], &[0.5; 64]);
        let mut found: Vec<TextKey> = found
            .iter()
            .map(|(k, d)| {
                assert!(d.abs() < 1e-6, "the same direction");
                *k
            })
            .collect();
        found.sort();
        assert_eq!((found, missing), (vec![key(0), key(3)], vec![key(1)]));
    }

    #[test]
    fn a_new_copy_of_a_clump_takes_over_its_texts() {
        let cache = ClumpCache::new(1 << 20);
        cache.insert(
            key(9),
            Arc::new(Clump::new(
                1,
                vec![(key(1), vec![1.0, 0.0]), (key(2), vec![1.0, 0.0])],
            )),
        );
        // The next revision lost text 2 and moved text 1.
        cache.insert(
            key(9),
            Arc::new(Clump::new(2, vec![(key(1), vec![0.0, 1.0])])),
        );
        let (found, missing) = cache.distances(&[key(1), key(2)], &[0.0, 1.0]);
        assert_eq!(missing, vec![key(2)]);
        assert_eq!(found.len(), 1);
        assert!(found[0].1.abs() < 1e-6, "{found:?}");
    }

    #[test]
    fn a_clump_larger_than_the_cache_is_not_kept_nor_wanted_again() {
        let cache = ClumpCache::new(16);
        cache.insert(
            key(1),
            Arc::new(Clump::new(1, vec![(key(2), vec![1.0; 8])])),
        );
        assert_eq!(cache.stats().clumps, 0);
        assert!(cache.get(&key(1), 1).is_none());
        assert!(!cache.has_wanted(), "the same revision is read no more");
        assert!(cache.get(&key(1), 2).is_none());
        assert!(cache.has_wanted(), "a changed clump is read again");
    }
}
