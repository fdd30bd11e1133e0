//! Clumps' member vectors in memory, for [`nearest_texts`](crate::vectors::nearest_texts).
//!
//! A search takes the nearest representatives by HNSW and then scores every
//! member of their clumps (see [`vectors`](crate::vectors)). PostgreSQL does that
//! row by row at ~1.3 µs a member, and a top-50 search over 193,101 texts scores
//! 15,000 or more members (27 ms at p50). Here a clump's members are read once,
//! binary, and kept as one contiguous array that a search scores in a tight loop.
//!
//! A copy is only used while it is the clump: each clump has a revision
//! (`embedding_clumps`, kept by triggers on `embedding_texts`) that changes
//! whenever its members do, and the search reads the representatives' revisions
//! in the same statement as the HNSW search. A search never waits for a clump to
//! be read: PostgreSQL scores the clumps the cache does not hold at their current
//! revision, and the cache notes them as wanted, for
//! [`fill_clump_cache`](crate::vectors::fill_clump_cache) to read off the search
//! path. Copies are dropped least recently used first once they take more than
//! the cache's capacity.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use crate::vectors::TextKey;

/// One clump's members at one revision: their keys and vectors, row by row,
/// each vector twice: as stored (f32), and its direction in 8-bit codes for the
/// scan that picks which members to score exactly.
#[derive(Debug)]
pub struct Clump {
    revision: i64,
    keys: Vec<TextKey>,
    dimensions: usize,
    /// `keys.len()` vectors of `dimensions` each, one after another.
    vectors: Vec<f32>,
    /// 1 / |v| of each vector (stored vectors are unit length, up to rounding).
    inverse_norms: Vec<f32>,
    /// Each unit vector u = v / |v| as `round(u / scale)`, row by row.
    codes: Vec<i8>,
    /// Each row's scale: max |u_i| / 127.
    scales: Vec<f32>,
    /// Each row's ‖u − scale · codes‖₂, for the error bound of the scan.
    residuals: Vec<f32>,
}

impl Clump {
    /// A clump at `revision` from its members' keys and vectors. Members whose
    /// vector has another length than the first are left out (a vector column has
    /// one dimension, so there are none).
    pub fn new(revision: i64, members: Vec<(TextKey, Vec<f32>)>) -> Clump {
        let dimensions = members.first().map_or(0, |(_, v)| v.len());
        let rows = members.len();
        let mut clump = Clump {
            revision,
            keys: Vec::with_capacity(rows),
            dimensions,
            vectors: Vec::with_capacity(rows * dimensions),
            inverse_norms: Vec::with_capacity(rows),
            codes: Vec::with_capacity(rows * dimensions),
            scales: Vec::with_capacity(rows),
            residuals: Vec::with_capacity(rows),
        };
        for (key, vector) in members {
            if vector.len() != dimensions {
                continue;
            }
            let norm = dot(&vector, &vector).sqrt();
            let inverse_norm = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            let unit: Vec<f32> = vector.iter().map(|x| x * inverse_norm).collect();
            let at = clump.codes.len();
            let scale = quantise(&unit, &mut clump.codes);
            clump.scales.push(scale);
            clump
                .residuals
                .push(residual(&unit, &clump.codes[at..], scale));
            clump.inverse_norms.push(inverse_norm);
            clump.keys.push(key);
            clump.vectors.extend_from_slice(&vector);
        }
        clump
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

    /// Bytes a clump of `members` vectors of `dimensions` holds.
    pub fn bytes_of(members: usize, dimensions: usize) -> usize {
        let per_member = std::mem::size_of::<TextKey>()
            + dimensions // codes
            + (dimensions + 3) * std::mem::size_of::<f32>(); // vector, norm, scale, residual
        std::mem::size_of::<Clump>() + members * per_member
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

/// A query vector made ready for the scan: its direction, and that in 15-bit
/// codes (fine enough that the query's own rounding adds little to the bound).
struct QueryCodes {
    unit: Vec<f32>,
    codes: Vec<i16>,
    scale: f32,
    /// ‖scale · codes‖₂.
    coded_norm: f32,
    /// ‖unit − scale · codes‖₂.
    residual: f32,
}

impl QueryCodes {
    /// `None` for the zero vector (no direction to compare).
    fn new(query: &[f32]) -> Option<QueryCodes> {
        let norm = dot(query, query).sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return None;
        }
        let unit: Vec<f32> = query.iter().map(|x| x / norm).collect();
        let largest = unit.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = largest / f32::from(QUERY_CODE_MAX);
        let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let codes: Vec<i16> = unit.iter().map(|x| (x * inverse).round() as i16).collect();
        let coded: Vec<f32> = codes.iter().map(|&c| f32::from(c) * scale).collect();
        let coded_norm = dot(&coded, &coded).sqrt();
        let residual = unit
            .iter()
            .zip(&coded)
            .map(|(u, c)| (u - c) * (u - c))
            .sum::<f32>()
            .sqrt();
        Some(QueryCodes {
            unit,
            codes,
            scale,
            coded_norm,
            residual,
        })
    }
}

/// Appends `unit` as 8-bit codes, `round(u_i / scale)` with scale max |u_i| / 127,
/// and returns the scale.
fn quantise(unit: &[f32], codes: &mut Vec<i8>) -> f32 {
    let largest = unit.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = largest / 127.0;
    let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    // Within ±127 by the choice of scale; the cast saturates anyway.
    codes.extend(unit.iter().map(|x| (x * inverse).round() as i8));
    scale
}

/// ‖u − scale · codes‖₂ of a row of codes.
fn residual(unit: &[f32], codes: &[i8], scale: f32) -> f32 {
    unit.iter()
        .zip(codes)
        .map(|(u, &c)| {
            let d = u - f32::from(c) * scale;
            d * d
        })
        .sum::<f32>()
        .sqrt()
}

/// The largest query code: a lane of [`dot_codes`] adds a sixteenth of the
/// products, each at most 127 · 16,383, which stays inside an i32 up to 16,000
/// dimensions (MiniLM has 384).
const QUERY_CODE_MAX: i16 = 16_383;

/// Slack on the scan's error bound for f32 rounding (the bound itself is exact
/// arithmetic).
const ROUNDING_SLACK: f32 = 1e-5;

/// Offers `nearest` the members of `clumps` nearest to `query`, each at its exact
/// cosine distance from its stored vector; returns how many were scored exactly.
///
/// A scan over the codes gives each member its cosine within a bound that holds
/// for any vectors: with q = s_q·Q + δq and u = s_u·U + δu (unit vectors, codes
/// and the rounding left over), q·u − s_q·s_u·(Q·U) = δq·u + s_q·Q·δu, at most
/// ‖δq‖ + ‖s_q·Q‖·‖δu‖ (Cauchy–Schwarz, ‖u‖ = 1). The `n`th smallest upper bound (with what
/// `nearest` already holds) is at least the true `n`th distance, so a member whose
/// lower bound is past it cannot be among the `n` nearest, and only the others
/// are scored exactly. The answer is the exact one; the scan reads a quarter of
/// the bytes, which is what the scoring waits on.
pub fn score_clumps(clumps: &[Arc<Clump>], query: &[f32], nearest: &mut NearestTexts) -> usize {
    let Some(query) = QueryCodes::new(query) else {
        return 0;
    };
    let n = nearest.kept.n;
    let mut uppers = Smallest::new(n);
    for distance in nearest.distances() {
        uppers.offer(OrderedDistance(distance as f32));
    }
    // The scan in parts of about equal members, one a thread.
    let parts = scan_parts(clumps);
    let scanned: Vec<Scanned> = std::thread::scope(|scope| {
        let query = &query;
        let others: Vec<_> = parts[1..]
            .iter()
            .map(|&(from, to)| scope.spawn(move || scan_widest(clumps, from, to, query, n)))
            .collect();
        let mut scanned = vec![scan_widest(clumps, parts[0].0, parts[0].1, query, n)];
        // A part's thread only panics if scanning does, which it does not.
        scanned.extend(others.into_iter().filter_map(|h| h.join().ok()));
        scanned
    });
    for part in &scanned {
        for upper in part.uppers.iter() {
            uppers.offer(OrderedDistance(upper.0));
        }
    }
    let cutoff = uppers.nth().map_or(f32::INFINITY, |nth| nth.0);
    pulp::Arch::new().dispatch(ScoreWithin {
        clumps,
        scanned: &scanned,
        cutoff,
        query: &query,
        nearest,
    })
}

/// Scores exactly, with the widest vector instructions the CPU has, each
/// scanned member whose lower bound is within `cutoff`; returns how many.
struct ScoreWithin<'a> {
    clumps: &'a [Arc<Clump>],
    scanned: &'a [Scanned],
    cutoff: f32,
    query: &'a QueryCodes,
    nearest: &'a mut NearestTexts,
}

impl pulp::WithSimd for ScoreWithin<'_> {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> usize {
        let mut scored = 0;
        for (lower, c, row) in self.scanned.iter().flat_map(|part| part.bounded.iter()) {
            if *lower <= self.cutoff {
                let clump = &self.clumps[*c as usize];
                self.nearest.offer(
                    clump.keys[*row as usize],
                    clump.distance(*row as usize, self.query),
                );
                scored += 1;
            }
        }
        scored
    }
}

/// Members from which the scan is split over threads (a thread costs tens of
/// microseconds; 16,384 members take ~0.7 ms to scan).
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

/// What one part of the scan found: the `n` smallest upper bounds, and every
/// member's lower bound with where it is (clump, row).
struct Scanned {
    uppers: Smallest<OrderedDistance>,
    bounded: Vec<(f32, u32, u32)>,
}

/// The level the member scan runs at on this CPU, as `pulp` names it: on x86-64
/// `V4` (AVX-512), `V3` (AVX2 and FMA) or `Scalar` (the build's own baseline).
pub fn scan_level() -> String {
    let arch = format!("{:?}", pulp::Arch::new());
    arch.split('(').next().unwrap_or_default().to_owned()
}

/// [`scan`], compiled (by `pulp`) for each x86-64 level, run at the widest the CPU
/// has: AVX-512 or AVX2 where there, SSE2 otherwise. The build itself targets
/// plain x86-64; run there, top-50 took ~1.5 times as long (BENCHMARKS.md).
fn scan_widest(
    clumps: &[Arc<Clump>],
    from: usize,
    to: usize,
    query: &QueryCodes,
    n: usize,
) -> Scanned {
    pulp::Arch::new().dispatch(ScanPart {
        clumps,
        from,
        to,
        query,
        n,
    })
}

/// The arguments of one [`scan`], for [`pulp::Arch::dispatch`].
struct ScanPart<'a> {
    clumps: &'a [Arc<Clump>],
    from: usize,
    to: usize,
    query: &'a QueryCodes,
    n: usize,
}

impl pulp::WithSimd for ScanPart<'_> {
    type Output = Scanned;

    // Inlined all the way down to the dot products, so they are compiled with
    // the instructions of the level being dispatched.
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Scanned {
        scan(self.clumps, self.from, self.to, self.query, self.n)
    }
}

/// Scans the codes of `clumps[from..to]`.
#[inline(always)]
fn scan(clumps: &[Arc<Clump>], from: usize, to: usize, query: &QueryCodes, n: usize) -> Scanned {
    let dimensions = query.unit.len();
    let mut part = Scanned {
        uppers: Smallest::new(n),
        bounded: Vec::new(),
    };
    for (c, clump) in clumps.iter().enumerate().take(to).skip(from) {
        if clump.dimensions != dimensions {
            continue;
        }
        part.bounded.reserve(clump.len());
        let rows = clump.codes.chunks_exact(dimensions);
        for (row, codes) in rows.enumerate() {
            let scale = clump.scales[row];
            let cosine = dot_codes(&query.codes, codes) as f32 * query.scale * scale;
            let error = query.residual + query.coded_norm * clump.residuals[row] + ROUNDING_SLACK;
            part.uppers.offer(OrderedDistance(1.0 - (cosine - error)));
            part.bounded
                .push((1.0 - (cosine + error), c as u32, row as u32));
        }
    }
    part
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

    /// The `n`th smallest, once `n` were offered.
    fn nth(&self) -> Option<&T> {
        self.kept.peek().filter(|_| self.kept.len() == self.n)
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

/// A distance ordered by `total_cmp`.
struct OrderedDistance(f32);

impl PartialEq for OrderedDistance {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for OrderedDistance {}

impl PartialOrd for OrderedDistance {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedDistance {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The dot product of the query's codes and a row's, sixteen lanes at a time,
/// the lanes added up in i64 (their sum passes an i32 above 1,032 dimensions).
#[inline(always)]
fn dot_codes(a: &[i16], b: &[i8]) -> i64 {
    let mut lanes = [0i32; 16];
    let (a_chunks, b_chunks) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..16 {
            lanes[i] += i32::from(x[i]) * i32::from(i16::from(y[i]));
        }
    }
    lanes.iter().map(|&lane| i64::from(lane)).sum::<i64>() + i64::from(tail)
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
}

#[derive(Debug, Default)]
struct Held {
    clumps: HashMap<TextKey, HeldClump>,
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
        }
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
        if let Some(old) = held
            .clumps
            .insert(representative, HeldClump { clump, last_used })
        {
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
                self.bytes -= old.clump.bytes();
                self.members -= old.clump.len();
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

    #[test]
    fn the_code_scan_loses_none_of_the_exact_nearest() {
        // A tight clump, as near copies are: one direction and small deviations,
        // so many members lie within the scan's error of each other; in two
        // clumps, with enough members for the scan to split over threads.
        let dimensions = 384;
        let mut noise = noise(7);
        let centre: Vec<f32> = (0..dimensions).map(|_| noise()).collect();
        let members: Vec<(TextKey, Vec<f32>)> = (0..20_000u32)
            .map(|i| {
                let mut bytes = [0u8; 32];
                bytes[..4].copy_from_slice(&i.to_be_bytes());
                let v: Vec<f32> = centre.iter().map(|c| c + 0.3 * noise()).collect();
                (TextKey::from_stored(&bytes).unwrap(), unit(&v))
            })
            .collect();
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
        assert!(scored < 20_000, "the scan ruled some members out: {scored}");
        let found = nearest.into_sorted();
        assert_eq!(found.len(), 50);
        for ((key, distance), (want, want_key)) in found.iter().zip(&exact) {
            assert!((distance - want).abs() < 1e-5, "{distance} vs {want}");
            assert!(key == want_key || (distance - want).abs() < 1e-6);
        }
    }

    #[test]
    fn the_scan_at_the_cpus_level_bounds_as_the_plain_scan_does() {
        // The dispatched scan is the same code compiled for wider registers: the
        // integer dot products are exact and the rest is the same f32 operations,
        // so each member's bounds must come out bit for bit the same.
        let mut noise = noise(11);
        // 389 dimensions: the tail past the last 16 lanes is scanned too.
        let members: Vec<(TextKey, Vec<f32>)> = (0..500u32)
            .map(|i| {
                let mut bytes = [0u8; 32];
                bytes[..4].copy_from_slice(&i.to_be_bytes());
                let v: Vec<f32> = (0..389).map(|_| noise()).collect();
                (TextKey::from_stored(&bytes).unwrap(), unit(&v))
            })
            .collect();
        let clumps = vec![Arc::new(Clump::new(1, members))];
        let query: Vec<f32> = (0..389).map(|_| noise()).collect();
        let query = QueryCodes::new(&query).unwrap();
        let widest = scan_widest(&clumps, 0, 1, &query, 10);
        let plain = scan(&clumps, 0, 1, &query, 10);
        let bits = |part: &Scanned| -> Vec<(u32, u32, u32)> {
            part.bounded
                .iter()
                .map(|(lower, c, row)| (lower.to_bits(), *c, *row))
                .collect()
        };
        assert_eq!(bits(&widest), bits(&plain));
        let uppers = |part: Scanned| -> Vec<u32> {
            part.uppers
                .into_sorted()
                .iter()
                .map(|u| u.0.to_bits())
                .collect()
        };
        assert_eq!(uppers(widest), uppers(plain));
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
