//! Index → search round trips, the checkpoint in the commit payload, retention.
#![allow(clippy::unwrap_used)]

use chrono::TimeZone;
use serde_json::json;
use tantivy::query::{AllQuery, BooleanQuery, PhraseQuery, Query, TermQuery};
use tantivy::schema::IndexRecordOption;

use super::*;
use crate::model::{EventKind, Severity};
use crate::store::{DeadLetter, Position};

const STREAM: &str = "PALISADE_SECURITY";

fn event(day: u32, message: &str, attributes: serde_json::Value) -> Event {
    Event {
        ts: Utc
            .with_ymd_and_hms(2024, 5, day, 10, 0, 0)
            .unwrap()
            .checked_add_signed(chrono::Duration::nanoseconds(123_456_789))
            .unwrap(),
        host: Some("node-1".into()),
        source: "syscall".into(),
        kind: EventKind::FalcoAlert,
        severity: Severity::High,
        rule: Some("Read sensitive file untrusted".into()),
        message: message.into(),
        attributes: attributes.as_object().cloned().unwrap_or_default(),
    }
}

fn position(seq: u64) -> Position {
    Position {
        stream: STREAM.into(),
        seq,
        subject: "falco.error.x".into(),
    }
}

fn batch(messages: Vec<(u64, Vec<Event>)>) -> Batch {
    Batch {
        records: messages
            .into_iter()
            .map(|(seq, events)| (position(seq), Decoded::Events(events)))
            .collect(),
        dead_letters: Vec::new(),
    }
}

fn sample() -> Batch {
    batch(vec![
        (
            1,
            vec![event(
                1,
                "Sensitive file opened for reading (user=root command=cat /etc/shadow file=/etc/shadow)",
                json!({"proc.name": "cat", "fd.name": "/etc/shadow", "k8s.ns.name": "payments",
                       "k8s.pod.name": "web-7d9f", "fd.sip": "10.1.2.3"}),
            )],
        ),
        (
            2,
            vec![
                event(2, "nginx vulnerable to CVE-2023-44487 rapid reset", json!({})),
                event(
                    3,
                    "Accepted password for vagrant from 192.168.33.1 port 58803 ssh2",
                    json!({"hash": "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"}),
                ),
            ],
        ),
    ])
}

fn indexed() -> SearchIndex {
    let index = SearchIndex::open_in_ram(IndexOptions::for_tests()).unwrap();
    index.add_batch(&sample()).unwrap();
    index.commit().unwrap();
    index
}

fn text(index: &SearchIndex, token: &str) -> TermQuery {
    TermQuery::new(
        index.text_term(token).unwrap(),
        IndexRecordOption::WithFreqs,
    )
}

fn count(index: &SearchIndex, query: &dyn Query) -> usize {
    index.search(query, 10, 0, usize::MAX).unwrap().total
}

#[test]
fn indicators_are_found_whole_and_by_part() {
    let index = indexed();
    for (token, expected) in [
        ("/etc/shadow", 1),
        ("shadow", 1),
        ("user=root", 1),
        ("root", 1),
        ("USER=ROOT", 1),
        ("CVE-2023-44487", 1),
        ("192.168.33.1", 1),
        ("web-7d9f", 1),
        (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            1,
        ),
        ("proc.name=cat", 1),
        ("sensitive", 3), // the rule is in every document's text
        ("user=vagrant", 0),
    ] {
        assert_eq!(count(&index, &text(&index, token)), expected, "{token}");
    }
}

#[test]
fn phrases_line_up_across_parts() {
    let index = indexed();
    let phrase = |words: &[&str]| {
        PhraseQuery::new(
            words
                .iter()
                .map(|w| Term::from_field_text(index.fields().text, w))
                .collect(),
        )
    };
    assert_eq!(count(&index, &phrase(&["cat", "/etc/shadow"])), 1);
    assert_eq!(count(&index, &phrase(&["user=root", "command=cat"])), 1);
    assert_eq!(count(&index, &phrase(&["root", "command"])), 1);
    assert_eq!(count(&index, &phrase(&["shadow", "cat"])), 0);
}

#[test]
fn keyword_ip_and_json_fields_are_exact() {
    let index = indexed();
    let f = index.fields();
    let term = |field, value: &str| {
        TermQuery::new(
            Term::from_field_text(field, value),
            IndexRecordOption::Basic,
        )
    };
    assert_eq!(count(&index, &term(f.namespace, "payments")), 1);
    assert_eq!(count(&index, &term(f.host, "node-1")), 3);
    assert_eq!(count(&index, &term(f.kind, "falco_alert")), 3);
    assert_eq!(count(&index, &term(f.severity, "high")), 3);
    assert_eq!(
        count(&index, &term(f.rule, "Read sensitive file untrusted")),
        3
    );
    let level = TermQuery::new(
        Term::from_field_u64(f.severity_level, 3),
        IndexRecordOption::Basic,
    );
    assert_eq!(count(&index, &level), 3);

    let ip = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let v6 = match ip {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        TermQuery::new(Term::from_field_ip_addr(f.ip, v6), IndexRecordOption::Basic)
    };
    assert_eq!(count(&index, &ip("10.1.2.3")), 1);
    assert_eq!(count(&index, &ip("192.168.33.1")), 1);
    assert_eq!(count(&index, &ip("10.9.9.9")), 0);

    let mut json = Term::from_field_json_path(f.attributes, "proc.name", true);
    json.append_type_and_str("cat");
    assert_eq!(
        count(&index, &TermQuery::new(json, IndexRecordOption::Basic)),
        1
    );
}

#[test]
fn hits_carry_the_events_row_key() {
    let index = indexed();
    let page = index
        .search(&text(&index, "/etc/shadow"), 10, 0, usize::MAX)
        .unwrap();
    let hit = page.hits[0];
    assert_eq!(hit.id, row_id(STREAM, 1, 0));
    // Microseconds, truncated like the events table.
    assert_eq!(hit.ts.timestamp_subsec_nanos(), 123_456_000);
    assert!(hit.score.unwrap() > 0.0);
    assert_eq!(
        index.lookup_ts(row_id(STREAM, 2, 1)).unwrap(),
        Some(
            Utc.with_ymd_and_hms(2024, 5, 3, 10, 0, 0).unwrap()
                + chrono::Duration::microseconds(123_456)
        )
    );
    assert_eq!(index.lookup_ts(Uuid::nil()).unwrap(), None);
}

#[test]
fn sorted_pages_and_keys() {
    let index = indexed();
    let page = index
        .search_sorted(&AllQuery, (names::TS, Order::Desc), 2, 0, usize::MAX)
        .unwrap();
    assert_eq!(page.total, 3);
    let days: Vec<u32> = page
        .hits
        .iter()
        .map(|h| chrono::Datelike::day(&h.ts))
        .collect();
    assert_eq!(days, [3, 2]);
    let next = index
        .search_sorted(&AllQuery, (names::TS, Order::Desc), 2, 2, usize::MAX)
        .unwrap();
    assert_eq!(next.hits.len(), 1);
    assert_eq!(chrono::Datelike::day(&next.hits[0].ts), 1);
    assert!(index
        .search_sorted(&AllQuery, (names::HOST, Order::Asc), 5, 0, usize::MAX)
        .is_ok());
    assert!(matches!(
        index.search_sorted(&AllQuery, (names::TEXT, Order::Asc), 5, 0, usize::MAX),
        Err(SearchError::NotSortable(_))
    ));

    let keys = index.collect_keys(&AllQuery, 2).unwrap();
    assert_eq!((keys.total, keys.hits.len()), (3, 2));
    assert_eq!(index.search(&AllQuery, 0, 0, usize::MAX).unwrap().total, 3);
}

#[test]
fn counting_stops_at_the_cap() {
    let index = indexed();
    let exact = index.search(&AllQuery, 1, 0, 3).unwrap();
    assert_eq!(
        (exact.total, exact.total_exact, exact.hits.len()),
        (3, true, 1)
    );
    let capped = index.search(&AllQuery, 1, 0, 2).unwrap();
    assert_eq!((capped.total, capped.total_exact), (2, false));
    let sorted = index
        .search_sorted(&AllQuery, (names::TS, Order::Asc), 3, 0, 1)
        .unwrap();
    assert_eq!(
        (sorted.total, sorted.total_exact, sorted.hits.len()),
        (1, false, 3)
    );
}

#[test]
fn snippets_highlight_parts_and_escape_html() {
    let index = indexed();
    let html = index
        .snippet(&text(&index, "shadow"), "cat <x> /etc/shadow now")
        .unwrap();
    assert_eq!(html, "cat &lt;x&gt; /etc/<b>shadow</b> now");
    let none = index
        .snippet(&text(&index, "shadow"), "nothing here")
        .unwrap();
    assert_eq!(none, "");
}

#[test]
fn redelivered_messages_are_skipped_and_the_checkpoint_moves_over_dead_letters() {
    let index = indexed();
    let again = index.add_batch(&sample()).unwrap();
    assert_eq!(
        again,
        AddSummary {
            documents: 0,
            skipped: 2
        }
    );
    let mut more = batch(vec![(5, vec![event(4, "later", json!({}))])]);
    more.dead_letters.push(DeadLetter {
        position: position(7),
        reason: "bad json".into(),
        payload: Vec::new(),
    });
    assert_eq!(index.add_batch(&more).unwrap().documents, 1);
    assert_eq!(index.doc_count(), 3, "nothing visible before the commit");
    assert_eq!(index.commit().unwrap().get(STREAM), Some(7));
    assert_eq!(index.doc_count(), 4);
}

#[test]
fn rollback_forgets_uncommitted_documents() {
    let index = indexed();
    index
        .add_batch(&batch(vec![(9, vec![event(5, "x", json!({}))])]))
        .unwrap();
    assert_eq!(index.rollback().unwrap().get(STREAM), Some(2));
    assert_eq!(index.commit().unwrap().get(STREAM), Some(2));
    assert_eq!(index.doc_count(), 3);
    // After a rollback the same message is applied again.
    let added = index
        .add_batch(&batch(vec![(9, vec![event(5, "x", json!({}))])]))
        .unwrap();
    assert_eq!(added.documents, 1);
}

#[test]
fn retention_deletes_older_documents() {
    let index = indexed();
    let cutoff = Utc.with_ymd_and_hms(2024, 5, 3, 0, 0, 0).unwrap();
    assert_eq!(index.delete_before(cutoff).unwrap(), 2);
    assert_eq!(index.doc_count(), 1);
    assert_eq!(index.delete_before(cutoff).unwrap(), 0);
    assert_eq!(index.checkpoint().get(STREAM), Some(2));
}

#[test]
fn payload_survives_reopen_and_recreate_empties() {
    let dir = std::env::temp_dir().join(format!("palisade-search-test-{}", Uuid::new_v4()));
    {
        let index = SearchIndex::open(&dir, IndexOptions::for_tests()).unwrap();
        assert_eq!(index.checkpoint(), Checkpoint::default());
        index.add_batch(&sample()).unwrap();
        index.commit().unwrap();
        // Uncommitted work is lost on close, and its checkpoint with it.
        index
            .add_batch(&batch(vec![(3, vec![event(9, "lost", json!({}))])]))
            .unwrap();
        assert!(matches!(
            SearchIndex::open(&dir, IndexOptions::for_tests()),
            Err(SearchError::Locked { .. })
        ));
        assert!(matches!(
            SearchIndex::recreate(&dir, IndexOptions::for_tests()),
            Err(SearchError::Locked { .. })
        ));
    }
    let index = SearchIndex::open(&dir, IndexOptions::for_tests()).unwrap();
    assert_eq!(index.checkpoint().get(STREAM), Some(2));
    assert_eq!(index.doc_count(), 3);
    assert!(index.size_on_disk().unwrap() > 0);
    drop(index);
    let index = SearchIndex::recreate(&dir, IndexOptions::for_tests()).unwrap();
    assert_eq!(index.doc_count(), 0);
    assert_eq!(index.checkpoint(), Checkpoint::default());
    drop(index);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_index_of_another_schema_is_refused_or_emptied_for_a_rebuild() {
    let dir = std::env::temp_dir().join(format!("palisade-search-test-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    {
        // An index as an older Palisade left it: another set of fields.
        let mut builder = tantivy::schema::Schema::builder();
        builder.add_text_field("text", tantivy::schema::TEXT);
        let old = Index::create_in_dir(&dir, builder.build()).unwrap();
        let mut writer: IndexWriter = old.writer_with_num_threads(1, 15_000_000).unwrap();
        writer.commit().unwrap();
    }
    assert!(matches!(
        SearchIndex::open(&dir, IndexOptions::for_tests()),
        Err(SearchError::SchemaMismatch { .. })
    ));
    let (index, rebuilt) = SearchIndex::open_or_rebuild(&dir, IndexOptions::for_tests()).unwrap();
    assert!(rebuilt);
    assert_eq!(index.checkpoint(), Checkpoint::default());
    index.add_batch(&sample()).unwrap();
    index.commit().unwrap();
    drop(index);
    // Now current: opened as it is.
    let (index, rebuilt) = SearchIndex::open_or_rebuild(&dir, IndexOptions::for_tests()).unwrap();
    assert!(!rebuilt);
    assert_eq!(index.doc_count(), 3);
    drop(index);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn payloads_are_versioned() {
    assert_eq!(
        Checkpoint::from_payload(None).unwrap(),
        Checkpoint::default()
    );
    let mut checkpoint = Checkpoint::default();
    checkpoint.advance("A", 3);
    checkpoint.advance("A", 2);
    checkpoint.advance("B", 1);
    let payload = checkpoint.to_payload();
    assert_eq!(payload, r#"{"v":1,"streams":{"A":3,"B":1}}"#);
    assert_eq!(
        Checkpoint::from_payload(Some(&payload)).unwrap(),
        checkpoint
    );
    assert!(Checkpoint::from_payload(Some(r#"{"v":9,"streams":{}}"#)).is_err());
    assert!(Checkpoint::from_payload(Some("garbage")).is_err());
}

#[test]
fn boolean_queries_combine_fields() {
    let index = indexed();
    let f = index.fields();
    let query = BooleanQuery::intersection(vec![
        Box::new(text(&index, "root")),
        Box::new(TermQuery::new(
            Term::from_field_text(f.namespace, "payments"),
            IndexRecordOption::Basic,
        )),
    ]);
    assert_eq!(count(&index, &query), 1);
}

#[test]
fn filtering_events_keeps_those_the_query_matches_in_any_segment() {
    let index = indexed();
    // A second segment, later in time.
    index
        .add_batch(&batch(vec![(
            4,
            vec![event(
                9,
                "Failed password for root from 10.0.0.9",
                json!({}),
            )],
        )]))
        .unwrap();
    index.commit().unwrap();
    assert!(index.searcher().segment_readers().len() >= 2);
    let at = |day: u32| {
        Utc.with_ymd_and_hms(2024, 5, day, 10, 0, 0).unwrap()
            + chrono::Duration::microseconds(123_456)
    };
    let events = [
        (at(1), row_id(STREAM, 1, 0)),
        (at(2), row_id(STREAM, 2, 0)),
        (at(3), row_id(STREAM, 2, 1)),
        (at(9), row_id(STREAM, 4, 0)),
        (at(9), Uuid::nil()),
    ];
    let password = text(&index, "password");
    let matched = index.filter_events(&password, &events).unwrap();
    assert_eq!(
        matched,
        [row_id(STREAM, 2, 1), row_id(STREAM, 4, 0)]
            .into_iter()
            .collect()
    );
    let all = index.filter_events(&AllQuery, &events).unwrap();
    assert_eq!(all.len(), 4, "every indexed event, not the unknown id");
    // The time narrows which segments are asked: an event given a time outside
    // every segment's is not found.
    let wrong_time = [(at(20), row_id(STREAM, 2, 1))];
    assert!(index
        .filter_events(&AllQuery, &wrong_time)
        .unwrap()
        .is_empty());
    assert!(index.filter_events(&password, &[]).unwrap().is_empty());
}

#[test]
fn the_newest_matches_up_to_a_time_come_newest_first_across_segments() {
    let index = indexed();
    // Two more segments, later in time; the last one past `until`.
    for (seq, day) in [(4, 9), (5, 20)] {
        index
            .add_batch(&batch(vec![(
                seq,
                vec![event(day, "Failed password for root", json!({}))],
            )]))
            .unwrap();
        index.commit().unwrap();
    }
    let until = Utc.with_ymd_and_hms(2024, 5, 15, 0, 0, 0).unwrap();
    let days = |hits: Vec<SearchHit>| -> Vec<u32> {
        hits.iter().map(|h| chrono::Datelike::day(&h.ts)).collect()
    };
    let all = Box::new(AllQuery);
    assert_eq!(
        days(index.newest_until(all.clone(), until, 10).unwrap()),
        [9, 3, 2, 1]
    );
    // The limit keeps the newest, whichever segment they are in.
    assert_eq!(
        days(index.newest_until(all.clone(), until, 2).unwrap()),
        [9, 3]
    );
    assert!(index.newest_until(all, until, 0).unwrap().is_empty());
    let password = Box::new(text(&index, "password"));
    assert_eq!(
        days(index.newest_until(password, until, 10).unwrap()),
        [9, 3]
    );
    let early = Utc.with_ymd_and_hms(2024, 5, 2, 12, 0, 0).unwrap();
    assert_eq!(
        days(index.newest_until(Box::new(AllQuery), early, 10).unwrap()),
        [2, 1]
    );
}
