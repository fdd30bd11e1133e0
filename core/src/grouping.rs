//! Semantic alert grouping: "10,000 events, 3 attack patterns".
//!
//! Time is cut into tumbling windows (a configurable length, aligned to the Unix
//! epoch). As the vectors projection stores a batch, each distinct embedding text
//! new to its window joins the group of that window whose centroid is nearest, when
//! the cosine similarity reaches the threshold, or else opens a new group (leader
//! clustering). A centroid is the direction of the sum of its texts' unit vectors:
//! one vote per distinct text, so a burst of one identical alert does not drag the
//! group. Texts are taken in the order of their first event `(ts, id)`.
//!
//! ```text
//! batch's events ──► (window, text) pairs ──► not yet grouped? ──► nearest centroid
//!  sorted (ts, id)     first appearance         (alert_group_texts)   ≥ threshold → join
//!                                                                     else → new group
//! ```
//!
//! - Membership is stored per text and window (`alert_group_texts`); an event's
//!   group is its text's group in the window of its time. Counts, hosts, rules and
//!   first/last seen are aggregated from the events when asked, so a filter narrows
//!   them and a redelivered event is never counted twice.
//! - A group's id derives from its window and its founding text ([`group_id`]), so
//!   grouping the same data again ([`regroup`]) gives the same groups and ids.
//! - [`summarise`] answers the dashboard: the groups of the chosen events, one
//!   pattern per group, where the same group continuing over a window boundary (the
//!   centroids of groups of different windows within the threshold) is one pattern.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::store::StoreError;
use crate::vectors::{
    dot, parse_vector, vector_literal, EventLabels, EventText, TextKey, TextVector,
};

/// Default cosine similarity a text needs to join a group.
pub const DEFAULT_THRESHOLD: f32 = 0.6;

/// Default window length.
pub const DEFAULT_WINDOW: Duration = Duration::hours(24);

/// Most hosts and rules listed per pattern (their counts are exact).
pub const LISTED: usize = 20;

/// How texts are grouped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupingConfig {
    /// Cosine similarity to a group's centroid at which a text joins it.
    pub threshold: f32,
    /// Window length (whole seconds, at least one).
    pub window: Duration,
}

impl Default for GroupingConfig {
    fn default() -> Self {
        GroupingConfig {
            threshold: DEFAULT_THRESHOLD,
            window: DEFAULT_WINDOW,
        }
    }
}

/// A grouping window, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Window {
    /// First instant in the window.
    pub start: DateTime<Utc>,
    /// First instant after it.
    pub end: DateTime<Utc>,
}

impl GroupingConfig {
    /// The window `ts` falls in.
    pub fn window_of(&self, ts: DateTime<Utc>) -> Window {
        let length = self.window.num_seconds().max(1);
        let start = ts.timestamp().div_euclid(length) * length;
        let start = Utc
            .timestamp_opt(start, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        Window {
            start,
            end: start + Duration::seconds(length),
        }
    }

    /// Every window that overlaps `[from, to)`, oldest first.
    pub fn windows_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Window> {
        let mut windows = Vec::new();
        let mut window = self.window_of(from);
        while window.start < to {
            windows.push(window);
            window = self.window_of(window.end);
        }
        windows
    }
}

/// The id of the group that `founder` opened in `window`.
pub fn group_id(window: &Window, founder: &TextKey) -> Uuid {
    let mut name = Vec::with_capacity(64);
    name.extend_from_slice(&window.start.timestamp().to_be_bytes());
    name.extend_from_slice(&window.end.timestamp().to_be_bytes());
    name.extend_from_slice(founder.as_bytes());
    Uuid::new_v5(&GROUP_NAMESPACE, &name)
}

/// UUIDv5 namespace of group ids.
const GROUP_NAMESPACE: Uuid = Uuid::from_u128(0x5a1e_7a11_9a0c_4b1d_8e3c_a1e7_0000_0001);

/// One group of a window while texts are assigned.
#[derive(Debug, Clone, PartialEq)]
pub struct Centroid {
    /// The group's id.
    pub id: Uuid,
    /// The text that opened it.
    pub founder: TextKey,
    /// Sum of its texts' unit vectors.
    pub sum: Vec<f32>,
    /// How many texts.
    pub texts: i32,
}

impl Centroid {
    fn similarity(&self, vector: &[f32]) -> f32 {
        let norm = norm(&self.sum);
        if norm == 0.0 {
            return 0.0;
        }
        dot(&self.sum, vector) / norm
    }
}

/// Where a text went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assignment {
    /// Its group.
    pub group: Uuid,
    /// Cosine similarity to the group's centroid before the text joined (1 for a
    /// text that opened the group).
    pub similarity: f32,
    /// True when the text opened the group.
    pub opened: bool,
}

/// The groups of one window: leader clustering, no IO.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowGroups {
    groups: Vec<Centroid>,
}

impl WindowGroups {
    /// Groups as stored.
    pub fn new(groups: Vec<Centroid>) -> Self {
        WindowGroups { groups }
    }

    /// The groups.
    pub fn groups(&self) -> &[Centroid] {
        &self.groups
    }

    /// Puts the text `key` (unit vector `vector`) in the nearest group if its
    /// similarity reaches `threshold`, else in a new group. Ties go to the lower id,
    /// so the answer never depends on the order groups were loaded in.
    pub fn assign(
        &mut self,
        window: &Window,
        key: TextKey,
        vector: &[f32],
        threshold: f32,
    ) -> Assignment {
        let mut best: Option<(usize, f32)> = None;
        for (i, group) in self.groups.iter().enumerate() {
            let similarity = group.similarity(vector);
            let better = match best {
                None => true,
                Some((b, s)) => similarity > s || (similarity == s && group.id < self.groups[b].id),
            };
            if better {
                best = Some((i, similarity));
            }
        }
        match best {
            Some((i, similarity)) if similarity >= threshold => {
                let group = &mut self.groups[i];
                for (s, x) in group.sum.iter_mut().zip(vector) {
                    *s += x;
                }
                group.texts += 1;
                Assignment {
                    group: group.id,
                    similarity,
                    opened: false,
                }
            }
            _ => {
                let id = group_id(window, &key);
                self.groups.push(Centroid {
                    id,
                    founder: key,
                    sum: vector.to_vec(),
                    texts: 1,
                });
                Assignment {
                    group: id,
                    similarity: 1.0,
                    opened: true,
                }
            }
        }
    }
}

/// What one grouping step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GroupingSummary {
    /// Distinct (window, text) pairs that were new and got a group.
    pub texts_assigned: u64,
    /// Groups opened.
    pub groups_opened: u64,
}

/// Groups the texts of `events` that have no group in their window yet, inside the
/// caller's transaction (the vectors projection's write, so a batch's groups are
/// committed with its vectors). `new_texts` carries the vectors at hand; the others
/// are read from `embedding_texts`.
pub async fn assign(
    conn: &mut PgConnection,
    config: &GroupingConfig,
    events: &[EventText],
    new_texts: &[TextVector],
) -> Result<GroupingSummary, StoreError> {
    let mut ordered: Vec<&EventText> = events.iter().collect();
    ordered.sort_by_key(|e| (e.ts, e.id));
    let mut pairs: Vec<(Window, TextKey)> = Vec::new();
    let mut seen = HashSet::new();
    for event in ordered {
        let pair = (config.window_of(event.ts), event.key);
        if seen.insert(pair) {
            pairs.push(pair);
        }
    }
    if pairs.is_empty() {
        return Ok(GroupingSummary::default());
    }
    let mut windows: Vec<Window> = pairs.iter().map(|(w, _)| *w).collect();
    windows.sort();
    windows.dedup();
    lock_windows(conn, &windows).await?;

    let grouped: HashSet<(DateTime<Utc>, TextKey)> = {
        let keys: Vec<Vec<u8>> = pairs.iter().map(|(_, k)| k.as_bytes().to_vec()).collect();
        let starts: Vec<DateTime<Utc>> = pairs.iter().map(|(w, _)| w.start).collect();
        let rows: Vec<(Vec<u8>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT g.text_key, g.window_start FROM alert_group_texts g \
             JOIN unnest($1::bytea[], $2::timestamptz[]) AS p(text_key, window_start) \
             ON g.text_key = p.text_key AND g.window_start = p.window_start",
        )
        .bind(&keys)
        .bind(&starts)
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter()
            .filter_map(|(key, start)| Some((start, TextKey::from_stored(&key)?)))
            .collect()
    };
    pairs.retain(|(w, k)| !grouped.contains(&(w.start, *k)));
    if pairs.is_empty() {
        return Ok(GroupingSummary::default());
    }

    let vectors = text_vectors(conn, &pairs, new_texts).await?;
    let mut state = load_windows(conn, &windows).await?;
    let mut summary = GroupingSummary::default();
    let mut members: Vec<(TextKey, Window, Assignment)> = Vec::with_capacity(pairs.len());
    let mut changed: HashSet<Uuid> = HashSet::new();
    for (window, key) in pairs {
        let Some(vector) = vectors.get(&key) else {
            // A text with no stored vector cannot be grouped (retention removed it
            // between the write and now); it is left ungrouped, not guessed.
            continue;
        };
        let groups = state.entry(window).or_default();
        let assignment = groups.assign(&window, key, vector, config.threshold);
        summary.texts_assigned += 1;
        summary.groups_opened += u64::from(assignment.opened);
        changed.insert(assignment.group);
        members.push((key, window, assignment));
    }
    store_groups(conn, config, &state, &changed).await?;
    store_members(conn, &members).await?;
    Ok(summary)
}

/// One writer per window at a time, until the transaction ends (projection slots
/// write concurrently). `windows` must be sorted, so two writers take their locks
/// in the same order and cannot deadlock.
async fn lock_windows(conn: &mut PgConnection, windows: &[Window]) -> Result<(), StoreError> {
    for window in windows {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('palisade.alert_groups', $1))")
            .bind(window.start.timestamp())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The unit vectors of the texts of `pairs`: from `new_texts`, else stored.
async fn text_vectors(
    conn: &mut PgConnection,
    pairs: &[(Window, TextKey)],
    new_texts: &[TextVector],
) -> Result<HashMap<TextKey, Vec<f32>>, StoreError> {
    let mut vectors: HashMap<TextKey, Vec<f32>> = new_texts
        .iter()
        .map(|t| (t.key, t.embedding.clone()))
        .collect();
    let missing: Vec<Vec<u8>> = pairs
        .iter()
        .filter(|(_, k)| !vectors.contains_key(k))
        .map(|(_, k)| k.as_bytes().to_vec())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        let rows: Vec<(Vec<u8>, String)> = sqlx::query_as(
            "SELECT text_key, embedding::text FROM embedding_texts WHERE text_key = ANY($1)",
        )
        .bind(&missing)
        .fetch_all(&mut *conn)
        .await?;
        for (key, embedding) in rows {
            if let (Some(key), Some(vector)) =
                (TextKey::from_stored(&key), parse_vector(&embedding))
            {
                vectors.insert(key, vector);
            }
        }
    }
    Ok(vectors)
}

/// The stored groups of `windows`.
async fn load_windows(
    conn: &mut PgConnection,
    windows: &[Window],
) -> Result<HashMap<Window, WindowGroups>, StoreError> {
    let starts: Vec<DateTime<Utc>> = windows.iter().map(|w| w.start).collect();
    let ends: Vec<DateTime<Utc>> = windows.iter().map(|w| w.end).collect();
    type StoredGroup = (Uuid, DateTime<Utc>, DateTime<Utc>, Vec<u8>, String, i32);
    let rows: Vec<StoredGroup> = sqlx::query_as(
        "SELECT g.id, g.window_start, g.window_end, g.founder_key, g.centroid_sum::text, g.texts \
         FROM alert_groups g JOIN unnest($1::timestamptz[], $2::timestamptz[]) AS w(s, e) \
         ON g.window_start = w.s AND g.window_end = w.e ORDER BY g.id",
    )
    .bind(&starts)
    .bind(&ends)
    .fetch_all(&mut *conn)
    .await?;
    let mut state: HashMap<Window, WindowGroups> = HashMap::new();
    for (id, start, end, founder, sum, texts) in rows {
        let (Some(founder), Some(sum)) = (TextKey::from_stored(&founder), parse_vector(&sum))
        else {
            return Err(StoreError::Unstorable(format!(
                "alert group {id} has an unreadable founder key or centroid"
            )));
        };
        state
            .entry(Window { start, end })
            .or_default()
            .groups
            .push(Centroid {
                id,
                founder,
                sum,
                texts,
            });
    }
    Ok(state)
}

async fn store_groups(
    conn: &mut PgConnection,
    config: &GroupingConfig,
    state: &HashMap<Window, WindowGroups>,
    changed: &HashSet<Uuid>,
) -> Result<(), StoreError> {
    let (mut ids, mut starts, mut ends, mut founders, mut sums, mut texts) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (window, groups) in state {
        for group in groups.groups.iter().filter(|g| changed.contains(&g.id)) {
            ids.push(group.id);
            starts.push(window.start);
            ends.push(window.end);
            founders.push(group.founder.as_bytes().to_vec());
            sums.push(vector_literal(&group.sum));
            texts.push(group.texts);
        }
    }
    sqlx::query(
        "INSERT INTO alert_groups (id, window_start, window_end, founder_key, centroid_sum, texts, threshold) \
         SELECT id, s, e, f, c::vector, n, $7 \
         FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::bytea[], $5::text[], $6::int[]) \
           AS t(id, s, e, f, c, n) \
         ON CONFLICT (id) DO UPDATE SET centroid_sum = EXCLUDED.centroid_sum, \
           texts = EXCLUDED.texts, updated_at = now()",
    )
    .bind(&ids)
    .bind(&starts)
    .bind(&ends)
    .bind(&founders)
    .bind(&sums)
    .bind(&texts)
    .bind(config.threshold)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn store_members(
    conn: &mut PgConnection,
    members: &[(TextKey, Window, Assignment)],
) -> Result<(), StoreError> {
    let keys: Vec<Vec<u8>> = members
        .iter()
        .map(|(k, _, _)| k.as_bytes().to_vec())
        .collect();
    let starts: Vec<DateTime<Utc>> = members.iter().map(|(_, w, _)| w.start).collect();
    let ends: Vec<DateTime<Utc>> = members.iter().map(|(_, w, _)| w.end).collect();
    let groups: Vec<Uuid> = members.iter().map(|(_, _, a)| a.group).collect();
    let similarity: Vec<f32> = members.iter().map(|(_, _, a)| a.similarity).collect();
    sqlx::query(
        "INSERT INTO alert_group_texts (text_key, window_start, window_end, group_id, similarity) \
         SELECT * FROM unnest($1::bytea[], $2::timestamptz[], $3::timestamptz[], $4::uuid[], $5::real[]) \
         ON CONFLICT (text_key, window_start) DO NOTHING",
    )
    .bind(&keys)
    .bind(&starts)
    .bind(&ends)
    .bind(&groups)
    .bind(&similarity)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Groups the window `window` again from its stored events and texts: its groups
/// are dropped and its texts assigned afresh in the order of their first event,
/// with `config`'s threshold. The same data gives the same groups and ids.
pub async fn regroup(
    pool: &PgPool,
    config: &GroupingConfig,
    window: Window,
) -> Result<GroupingSummary, StoreError> {
    let mut tx = pool.begin().await?;
    // Held from the delete on; `assign` takes it again, which PostgreSQL grants at once.
    lock_windows(&mut tx, &[window]).await?;
    sqlx::query("DELETE FROM alert_group_texts WHERE window_start >= $1 AND window_start < $2")
        .bind(window.start)
        .bind(window.end)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM alert_groups WHERE window_start >= $1 AND window_start < $2")
        .bind(window.start)
        .bind(window.end)
        .execute(&mut *tx)
        .await?;
    let firsts: Vec<FirstOfText> = sqlx::query_as(
        "SELECT event_id, ts, text_key, host, type, severity_level FROM ( \
             SELECT DISTINCT ON (text_key) event_id, ts, text_key, host, type, severity_level \
             FROM event_vectors \
             WHERE ts >= $1 AND ts < $2 ORDER BY text_key, ts, event_id) f \
         ORDER BY ts, event_id",
    )
    .bind(window.start)
    .bind(window.end)
    .fetch_all(&mut *tx)
    .await?;
    let events: Vec<EventText> = firsts
        .into_iter()
        .filter_map(|(id, ts, key, host, kind, severity_level)| {
            Some(EventText {
                id,
                ts,
                key: TextKey::from_stored(&key)?,
                labels: EventLabels {
                    host,
                    kind: kind.unwrap_or_default(),
                    severity_level: severity_level.unwrap_or_default(),
                },
            })
        })
        .collect();
    let window_config = GroupingConfig {
        window: window.end - window.start,
        ..*config
    };
    let summary = assign(&mut tx, &window_config, &events, &[]).await?;
    tx.commit().await?;
    Ok(summary)
}

/// The first event of a text in a window, as `event_vectors` holds it: id, time,
/// text key, host, type, severity level.
type FirstOfText = (
    Uuid,
    DateTime<Utc>,
    Vec<u8>,
    Option<String>,
    Option<String>,
    Option<i16>,
);

/// An event's key in PostgreSQL: `(ts, id)`.
pub type EventKey = (DateTime<Utc>, Uuid);

/// Which embedded events a summary covers.
#[derive(Debug, Clone, Copy)]
pub enum GroupedEvents<'a> {
    /// Every embedded event.
    All,
    /// The events with these `(ts, id)` keys.
    Keys(&'a [EventKey]),
}

/// An event shown for a pattern.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exemplar {
    /// The event's id.
    pub id: Uuid,
    /// Its time.
    pub ts: DateTime<Utc>,
    /// Its host.
    pub host: Option<String>,
    /// Its rule.
    pub rule: Option<String>,
    /// Its message.
    pub message: String,
    /// The text it was embedded as.
    pub text: Option<String>,
}

/// One attack pattern: a group, or the same group continuing over window
/// boundaries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertPattern {
    /// The id of its first group.
    pub id: Uuid,
    /// Its groups, oldest window first.
    pub groups: Vec<Uuid>,
    /// Matching events.
    pub events: u64,
    /// Distinct embedding texts among them.
    pub texts: u64,
    /// Distinct hosts.
    pub host_count: u64,
    /// Up to [`LISTED`] of them, most events first.
    pub hosts: Vec<String>,
    /// Distinct rules.
    pub rule_count: u64,
    /// Up to [`LISTED`] of them, most events first.
    pub rules: Vec<String>,
    /// Its first matching event.
    pub first_seen: DateTime<Utc>,
    /// Its last matching event.
    pub last_seen: DateTime<Utc>,
    /// A matching event of the group's founding text if there is one, else its latest.
    pub exemplar: Option<Exemplar>,
    /// Its events per slice of the answer's [`Timeline`], for a sparkline.
    pub sparkline: Vec<u64>,
}

/// Buckets in a pattern's [`AlertPattern::sparkline`].
pub const SPARKLINE_BUCKETS: usize = 24;

/// The span the sparklines cover: from the first to the last chosen event, cut
/// into [`SPARKLINE_BUCKETS`] equal slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// Start of the first slice.
    pub from: DateTime<Utc>,
    /// End of the last slice.
    pub to: DateTime<Utc>,
    /// Slices.
    pub buckets: usize,
}

/// The dashboard's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupSummary {
    /// Embedded events covered.
    pub events: u64,
    /// Of those, events in no group (embedded while grouping was off; `regroup`
    /// their windows).
    pub ungrouped: u64,
    /// Patterns, most events first.
    pub patterns: Vec<AlertPattern>,
    /// What the sparklines cover; `None` when no event was chosen.
    pub timeline: Option<Timeline>,
}

/// One group's aggregate over the chosen events.
struct GroupRow {
    id: Uuid,
    window_start: DateTime<Utc>,
    sum: Vec<f32>,
    events: i64,
    texts: i64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    hosts: Vec<(String, i64)>,
    rules: Vec<(String, i64)>,
    exemplar: EventKey,
    sparkline: Vec<u64>,
}

/// The groups of `events`, merged into patterns across windows at `threshold`.
pub async fn summarise(
    conn: &mut PgConnection,
    events: GroupedEvents<'_>,
    threshold: f32,
) -> Result<GroupSummary, StoreError> {
    let (times, ids): (Vec<DateTime<Utc>>, Vec<Uuid>) = match events {
        GroupedEvents::All => (Vec::new(), Vec::new()),
        GroupedEvents::Keys(keys) => keys.iter().copied().unzip(),
    };
    let source = match events {
        GroupedEvents::All => "event_vectors v",
        GroupedEvents::Keys(_) => {
            "unnest($1::timestamptz[], $2::uuid[]) AS k(ts, id) \
             JOIN event_vectors v ON v.event_id = k.id AND v.ts = k.ts"
        }
    };
    // `chosen` is read by every aggregate, so it is materialised once.
    let sql = format!(
        "WITH chosen AS MATERIALIZED ( \
             SELECT v.event_id, v.ts, v.text_key, e.host, e.rule, g.group_id, a.founder_key \
             FROM {source} \
             JOIN events e ON e.id = v.event_id AND e.ts = v.ts \
             LEFT JOIN alert_group_texts g \
               ON g.text_key = v.text_key AND v.ts >= g.window_start AND v.ts < g.window_end \
             LEFT JOIN alert_groups a ON a.id = g.group_id), \
         hosts AS (SELECT group_id, host, count(*) AS n FROM chosen WHERE host IS NOT NULL \
                   GROUP BY group_id, host), \
         rules AS (SELECT group_id, rule, count(*) AS n FROM chosen WHERE rule IS NOT NULL \
                   GROUP BY group_id, rule), \
         exemplars AS (SELECT DISTINCT ON (group_id) group_id, ts, event_id FROM chosen \
                   ORDER BY group_id, (text_key = founder_key) DESC, ts DESC, event_id), \
         totals AS (SELECT group_id, count(*) AS n, count(DISTINCT text_key) AS texts, \
                   min(ts) AS first_seen, max(ts) AS last_seen FROM chosen GROUP BY group_id), \
         span AS (SELECT extract(epoch FROM min(ts)) AS lo, \
                         extract(epoch FROM max(ts)) + 0.001 AS hi FROM chosen), \
         slices AS (SELECT c.group_id, \
                   width_bucket(extract(epoch FROM c.ts), s.lo, s.hi, {SPARKLINE_BUCKETS}) - 1 AS b, \
                   count(*) AS n FROM chosen c, span s GROUP BY 1, 2) \
         SELECT t.group_id, t.n, t.texts, t.first_seen, t.last_seen, \
           COALESCE((SELECT jsonb_agg(jsonb_build_array(h.host, h.n) ORDER BY h.n DESC, h.host) \
                     FROM hosts h WHERE h.group_id IS NOT DISTINCT FROM t.group_id), '[]'), \
           COALESCE((SELECT jsonb_agg(jsonb_build_array(r.rule, r.n) ORDER BY r.n DESC, r.rule) \
                     FROM rules r WHERE r.group_id IS NOT DISTINCT FROM t.group_id), '[]'), \
           COALESCE((SELECT jsonb_agg(jsonb_build_array(l.b, l.n)) \
                     FROM slices l WHERE l.group_id IS NOT DISTINCT FROM t.group_id), '[]'), \
           x.ts, x.event_id \
         FROM totals t JOIN exemplars x ON x.group_id IS NOT DISTINCT FROM t.group_id"
    );
    let query = sqlx::query_as::<
        _,
        (
            Option<Uuid>,
            i64,
            i64,
            DateTime<Utc>,
            DateTime<Utc>,
            serde_json::Value,
            serde_json::Value,
            serde_json::Value,
            DateTime<Utc>,
            Uuid,
        ),
    >(&sql);
    let query = match events {
        GroupedEvents::All => query,
        GroupedEvents::Keys(_) => query.bind(&times).bind(&ids),
    };
    let rows = query.fetch_all(&mut *conn).await?;

    let mut summary = GroupSummary {
        events: 0,
        ungrouped: 0,
        patterns: Vec::new(),
        timeline: None,
    };
    let mut groups: Vec<GroupRow> = Vec::new();
    for (id, events, texts, first_seen, last_seen, hosts, rules, slices, ex_ts, ex_id) in rows {
        let events_u = u64::try_from(events).unwrap_or(0);
        summary.events += events_u;
        let timeline = summary.timeline.get_or_insert(Timeline {
            from: first_seen,
            to: last_seen,
            buckets: SPARKLINE_BUCKETS,
        });
        timeline.from = timeline.from.min(first_seen);
        timeline.to = timeline.to.max(last_seen);
        let Some(id) = id else {
            summary.ungrouped += events_u;
            continue;
        };
        groups.push(GroupRow {
            id,
            window_start: first_seen,
            sum: Vec::new(),
            events,
            texts,
            first_seen,
            last_seen,
            hosts: counted(&hosts),
            rules: counted(&rules),
            exemplar: (ex_ts, ex_id),
            sparkline: sparkline(&slices),
        });
    }
    let group_ids: Vec<Uuid> = groups.iter().map(|g| g.id).collect();
    let meta: Vec<(Uuid, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT id, window_start, centroid_sum::text FROM alert_groups WHERE id = ANY($1)",
    )
    .bind(&group_ids)
    .fetch_all(&mut *conn)
    .await?;
    let meta: HashMap<Uuid, (DateTime<Utc>, Vec<f32>)> = meta
        .into_iter()
        .filter_map(|(id, start, sum)| Some((id, (start, parse_vector(&sum)?))))
        .collect();
    for group in &mut groups {
        if let Some((start, sum)) = meta.get(&group.id) {
            group.window_start = *start;
            group.sum.clone_from(sum);
        }
    }
    let patterns = merge_across_windows(groups, threshold);
    let keys: Vec<EventKey> = patterns.iter().map(|(_, key)| *key).collect();
    let exemplars = load_exemplars(conn, &keys).await?;
    summary.patterns = patterns
        .into_iter()
        .zip(exemplars)
        .map(|((pattern, _), exemplar)| AlertPattern {
            exemplar,
            ..pattern
        })
        .collect();
    Ok(summary)
}

/// The events of `groups` within `[from, to)`, newest first, at most `limit`: a
/// pattern's click-through. Each row: id, ts, host, source, type, severity, rule,
/// message.
pub async fn group_events(
    conn: &mut PgConnection,
    groups: &[Uuid],
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    limit: i64,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let rows: Vec<(serde_json::Value,)> = sqlx::query_as(
        "SELECT jsonb_build_object('id', e.id, 'ts', e.ts, 'host', e.host, 'source', e.source, \
                'type', e.type, 'severity', e.severity, 'rule', e.rule, 'message', e.message) \
         FROM alert_group_texts g \
         JOIN event_vectors v ON v.text_key = g.text_key \
              AND v.ts >= g.window_start AND v.ts < g.window_end \
         JOIN events e ON e.id = v.event_id AND e.ts = v.ts \
         WHERE g.group_id = ANY($1) AND v.ts >= $2 AND v.ts < $3 \
         ORDER BY v.ts DESC, v.event_id LIMIT $4",
    )
    .bind(groups)
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(row,)| row).collect())
}

/// `[[slice, events], …]` as events per slice.
fn sparkline(slices: &serde_json::Value) -> Vec<u64> {
    let mut counts = vec![0; SPARKLINE_BUCKETS];
    for pair in slices.as_array().into_iter().flatten() {
        let slice = pair[0].as_u64().and_then(|b| usize::try_from(b).ok());
        if let (Some(slice), Some(n)) = (slice, pair[1].as_u64()) {
            if let Some(count) = counts.get_mut(slice) {
                *count += n;
            }
        }
    }
    counts
}

fn counted(value: &serde_json::Value) -> Vec<(String, i64)> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| Some((pair.get(0)?.as_str()?.to_owned(), pair.get(1)?.as_i64()?)))
        .collect()
}

/// A pattern being built, with what the merge needs.
struct PatternParts {
    pattern: AlertPattern,
    sum: Vec<f32>,
    windows: HashSet<DateTime<Utc>>,
    hosts: HashMap<String, i64>,
    rules: HashMap<String, i64>,
    /// The exemplar of its largest group, and that group's size.
    exemplar: (EventKey, i64),
}

/// Groups of different windows whose centroids are within `threshold` become one
/// pattern (leader clustering over the groups, oldest first); groups of one window
/// stay apart, as grouping left them.
/// Each pattern comes with its exemplar's key (its row is read afterwards).
fn merge_across_windows(
    mut groups: Vec<GroupRow>,
    threshold: f32,
) -> Vec<(AlertPattern, EventKey)> {
    groups.sort_by_key(|g| (g.window_start, g.first_seen, g.id));
    let mut parts: Vec<PatternParts> = Vec::new();
    for group in groups {
        let mut best: Option<(usize, f32)> = None;
        for (i, part) in parts.iter().enumerate() {
            if part.windows.contains(&group.window_start) {
                continue;
            }
            let norms = norm(&part.sum) * norm(&group.sum);
            if norms == 0.0 {
                continue;
            }
            let similarity = dot(&part.sum, &group.sum) / norms;
            if best.is_none_or(|(_, s)| similarity > s) {
                best = Some((i, similarity));
            }
        }
        let events = u64::try_from(group.events).unwrap_or(0);
        let texts = u64::try_from(group.texts).unwrap_or(0);
        match best {
            Some((i, s)) if s >= threshold => {
                let part = &mut parts[i];
                for (a, b) in part.sum.iter_mut().zip(&group.sum) {
                    *a += b;
                }
                part.windows.insert(group.window_start);
                let p = &mut part.pattern;
                p.groups.push(group.id);
                p.events += events;
                p.texts += texts;
                p.first_seen = p.first_seen.min(group.first_seen);
                p.last_seen = p.last_seen.max(group.last_seen);
                for (host, n) in group.hosts {
                    *part.hosts.entry(host).or_default() += n;
                }
                for (rule, n) in group.rules {
                    *part.rules.entry(rule).or_default() += n;
                }
                for (a, b) in p.sparkline.iter_mut().zip(&group.sparkline) {
                    *a += b;
                }
                if group.events > part.exemplar.1 {
                    part.exemplar = (group.exemplar, group.events);
                }
            }
            _ => parts.push(PatternParts {
                pattern: AlertPattern {
                    id: group.id,
                    groups: vec![group.id],
                    events,
                    texts,
                    host_count: 0,
                    hosts: Vec::new(),
                    rule_count: 0,
                    rules: Vec::new(),
                    first_seen: group.first_seen,
                    last_seen: group.last_seen,
                    exemplar: None,
                    sparkline: group.sparkline,
                },
                sum: group.sum,
                windows: HashSet::from([group.window_start]),
                hosts: group.hosts.into_iter().collect(),
                rules: group.rules.into_iter().collect(),
                exemplar: (group.exemplar, group.events),
            }),
        }
    }
    let mut patterns: Vec<(AlertPattern, EventKey)> = parts
        .into_iter()
        .map(|part| {
            let mut pattern = part.pattern;
            pattern.host_count = part.hosts.len() as u64;
            pattern.hosts = most_first(part.hosts);
            pattern.rule_count = part.rules.len() as u64;
            pattern.rules = most_first(part.rules);
            (pattern, part.exemplar.0)
        })
        .collect();
    patterns.sort_by(|(a, _), (b, _)| {
        b.events
            .cmp(&a.events)
            .then(a.first_seen.cmp(&b.first_seen))
    });
    patterns
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn most_first(counts: HashMap<String, i64>) -> Vec<String> {
    let mut counts: Vec<(String, i64)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
        .into_iter()
        .take(LISTED)
        .map(|(name, _)| name)
        .collect()
}

/// The events `keys`, in order (`None` for one that is gone).
async fn load_exemplars(
    conn: &mut PgConnection,
    keys: &[EventKey],
) -> Result<Vec<Option<Exemplar>>, StoreError> {
    let (times, ids): (Vec<DateTime<Utc>>, Vec<Uuid>) = keys.iter().copied().unzip();
    type ExemplarRow = (
        Uuid,
        DateTime<Utc>,
        Option<String>,
        Option<String>,
        String,
        Option<String>,
    );
    let rows: Vec<ExemplarRow> = sqlx::query_as(
        "SELECT e.id, e.ts, e.host, e.rule, e.message, t.text \
             FROM unnest($1::timestamptz[], $2::uuid[]) AS k(ts, id) \
             JOIN events e ON e.ts = k.ts AND e.id = k.id \
             LEFT JOIN event_vectors v ON v.event_id = e.id AND v.ts = e.ts \
             LEFT JOIN embedding_texts t ON t.text_key = v.text_key",
    )
    .bind(&times)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let rows: HashMap<Uuid, Exemplar> = rows
        .into_iter()
        .map(|(id, ts, host, rule, message, text)| {
            (
                id,
                Exemplar {
                    id,
                    ts,
                    host,
                    rule,
                    message,
                    text,
                },
            )
        })
        .collect();
    Ok(keys.iter().map(|(_, id)| rows.get(id).cloned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::Provenance;

    fn key(text: &str) -> TextKey {
        let provenance = Provenance {
            model: "m".into(),
            text_version: 1,
        };
        TextKey::of(&provenance, text)
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = norm(v);
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn windows_are_aligned_and_tumbling() {
        let config = GroupingConfig {
            threshold: 0.8,
            window: Duration::hours(1),
        };
        let ts = Utc.with_ymd_and_hms(2026, 11, 20, 10, 59, 59).unwrap();
        let window = config.window_of(ts);
        assert_eq!(
            window.start,
            Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap()
        );
        assert_eq!(
            window.end,
            Utc.with_ymd_and_hms(2026, 11, 20, 11, 0, 0).unwrap()
        );
        assert_eq!(config.window_of(window.end).start, window.end);
        let from = Utc.with_ymd_and_hms(2026, 11, 20, 10, 30, 0).unwrap();
        let windows = config.windows_between(from, from + Duration::hours(2));
        assert_eq!(windows.len(), 3);
        assert_eq!(windows[0], window);
        // Before the epoch too.
        let old = config.window_of(DateTime::<Utc>::UNIX_EPOCH - Duration::seconds(1));
        assert_eq!(old.end, DateTime::<Utc>::UNIX_EPOCH);
    }

    #[test]
    fn near_texts_join_far_texts_open_groups() {
        let window = GroupingConfig::default().window_of(Utc::now());
        let mut groups = WindowGroups::default();
        let a = groups.assign(&window, key("a"), &unit(&[1.0, 0.0, 0.0]), 0.8);
        assert!(a.opened);
        assert_eq!(a.group, group_id(&window, &key("a")));
        // cos ≈ 0.995: joins.
        let b = groups.assign(&window, key("b"), &unit(&[1.0, 0.1, 0.0]), 0.8);
        assert!(!b.opened);
        assert_eq!(b.group, a.group);
        assert!(b.similarity > 0.99 && b.similarity < 1.0);
        // Orthogonal: a group of its own.
        let c = groups.assign(&window, key("c"), &unit(&[0.0, 0.0, 1.0]), 0.8);
        assert!(c.opened);
        assert_ne!(c.group, a.group);
        assert_eq!(groups.groups().len(), 2);
        assert_eq!(groups.groups()[0].texts, 2);
        // Nearest wins, not first.
        let d = groups.assign(&window, key("d"), &unit(&[0.1, 0.0, 1.0]), 0.8);
        assert_eq!(d.group, c.group);
    }

    #[test]
    fn the_same_texts_in_the_same_order_give_the_same_groups() {
        let window = GroupingConfig::default().window_of(Utc::now());
        let texts: Vec<(TextKey, Vec<f32>)> = (0..40)
            .map(|i| {
                let angle = i as f32 * 0.13;
                (key(&i.to_string()), unit(&[angle.cos(), angle.sin(), 0.2]))
            })
            .collect();
        let run = || {
            let mut groups = WindowGroups::default();
            let assigned: Vec<Uuid> = texts
                .iter()
                .map(|(k, v)| groups.assign(&window, *k, v, 0.9).group)
                .collect();
            (assigned, groups)
        };
        let (first, groups) = run();
        assert_eq!(first, run().0);
        assert!(groups.groups().len() > 1 && groups.groups().len() < 40);
        // Another window, other ids.
        let other = GroupingConfig::default().window_of(Utc::now() + Duration::days(2));
        assert_ne!(
            group_id(&window, &texts[0].0),
            group_id(&other, &texts[0].0)
        );
    }

    fn row(id: u128, window_hours: i64, sum: Vec<f32>, events: i64) -> GroupRow {
        let start =
            Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap() + Duration::hours(window_hours);
        GroupRow {
            id: Uuid::from_u128(id),
            window_start: start,
            sum,
            events,
            texts: 1,
            first_seen: start,
            last_seen: start + Duration::minutes(5),
            hosts: vec![(format!("h{id}"), events)],
            rules: vec![("r".into(), events)],
            exemplar: (start, Uuid::from_u128(id + 100)),
            sparkline: vec![u64::try_from(events).unwrap(); SPARKLINE_BUCKETS],
        }
    }

    #[test]
    fn a_group_continuing_over_windows_is_one_pattern() {
        let patterns = merge_across_windows(
            vec![
                row(1, 0, vec![2.0, 0.0], 10),
                row(2, 24, vec![1.0, 0.05], 30),
                // Same window as 1, near it: stays apart.
                row(3, 0, vec![1.0, 0.4], 5),
                row(4, 24, vec![0.0, 1.0], 1),
            ],
            0.9,
        );
        assert_eq!(patterns.len(), 3);
        let (first, exemplar) = &patterns[0];
        assert!(first.exemplar.is_none(), "read afterwards");
        assert_eq!(first.groups, vec![Uuid::from_u128(1), Uuid::from_u128(2)]);
        assert_eq!(first.events, 40);
        assert_eq!(first.host_count, 2);
        assert_eq!(first.hosts, vec!["h2".to_owned(), "h1".to_owned()]);
        assert_eq!(first.rules, vec!["r".to_owned()]);
        // The exemplar of the larger group.
        assert_eq!(exemplar.1, Uuid::from_u128(102));
        assert_eq!(patterns[1].0.events, 5);
        assert_eq!(patterns[2].0.events, 1);
    }
}
