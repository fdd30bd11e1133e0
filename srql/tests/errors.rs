//! Snapshot tests of every message a user can see: one case per error path of the
//! parser and the compiler. Each snapshot holds the query, a caret under the reported
//! column, and the error as displayed (`expected … at column N (found …)`).
//!
//! New or changed messages: `INSTA_UPDATE=always cargo test -p palisade-srql --test errors`
//! (or `cargo insta review`), then read the `.snap` diff before committing it.

mod common;

use common::options;
use palisade_srql::compile;

/// The query, a caret under the error's column, and the message.
fn render(query: &str) -> String {
    let err = match compile(query, &options()) {
        Ok(c) => panic!("`{query}` compiled, but an error was expected: {}", c.sql),
        Err(e) => e,
    };
    let shown: String = query.chars().take(120).collect();
    let ellipsis = if query.chars().count() > 120 {
        "…"
    } else {
        ""
    };
    let caret = if err.column <= 121 {
        format!("{}^", " ".repeat(err.column - 1))
    } else {
        format!("(column {} is past the part shown)", err.column)
    };
    format!("{shown}{ellipsis}\n{caret}\n{err}")
}

macro_rules! error_case {
    ($name:ident, $query:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(render(&$query));
        }
    };
}

// ---- parser ----------------------------------------------------------------------------
error_case!(parse_trailing_close_paren, r#"a )"#);
error_case!(parse_leading_close_paren, r#")"#);
error_case!(parse_or_without_right_side, r#"a OR"#);
error_case!(parse_and_without_right_side, r#"a AND"#);
error_case!(parse_not_without_operand, r#"NOT"#);
error_case!(parse_unclosed_paren, r#"(a OR b"#);
error_case!(parse_unclosed_phrase, r#""open phrase"#);
error_case!(parse_phrase_ends_in_backslash, r#""abc\"#);
error_case!(parse_missing_value_at_end, r#"host:"#);
error_case!(parse_missing_value_before_space, r#"host: web-01"#);
error_case!(parse_missing_value_before_pipe, r#"host:| limit:5"#);
error_case!(parse_compare_without_value, r#"severity:>="#);
error_case!(parse_unclosed_list, r#"host:(a,b"#);
error_case!(parse_empty_list_item, r#"host:(a,,b)"#);
error_case!(parse_unclosed_range, r#"time:[2026-11-01,2026-11-02"#);
error_case!(
    parse_range_with_three_values,
    r#"time:[2026-11-01,2026-11-02,2026-11-03]"#
);
error_case!(parse_empty_stage, r#"a |"#);
error_case!(parse_unknown_stage, r#"a | head 10"#);
error_case!(parse_sort_without_field, r#"a | sort:"#);
error_case!(parse_limit_not_a_number, r#"a | limit:ten"#);
error_case!(parse_limit_too_large, r#"a | limit:99999999999"#);
error_case!(parse_stats_colon_without_quotes, r#"| stats:count()"#);
error_case!(
    parse_stats_colon_trailing_text,
    r#"| stats:"count() total""#
);
error_case!(parse_stats_without_aggregates, r#"| stats"#);
error_case!(parse_stats_unknown_aggregate, r#"| stats median(value)"#);
error_case!(
    parse_stats_aggregate_without_paren,
    r#"| stats count by host"#
);
error_case!(parse_stats_aggregate_unclosed, r#"| stats count(host"#);
error_case!(parse_stats_as_without_name, r#"| stats count() as"#);
error_case!(parse_stats_by_without_field, r#"| stats count() by"#);
error_case!(parse_bucket_without_field, r#"| stats count() by bucket("#);
error_case!(
    parse_bucket_without_comma,
    r#"| stats count() by bucket(ts)"#
);
error_case!(
    parse_bucket_without_width,
    r#"| stats count() by bucket(ts, )"#
);
error_case!(parse_bucket_unclosed, r#"| stats count() by bucket(ts, 1h"#);
error_case!(
    parse_similar_to_without_phrase,
    r#"| SIMILAR_TO(privilege)"#
);
error_case!(
    parse_similar_to_without_k,
    r#"| SIMILAR_TO("privilege escalation", )"#
);
error_case!(
    parse_similar_to_k_too_large,
    r#"| SIMILAR_TO("x", 99999999999)"#
);
error_case!(parse_similar_to_unclosed, r#"| SIMILAR_TO("x""#);
error_case!(parse_similar_to_k_zero, r#"| SIMILAR_TO("x", 0)"#);
error_case!(
    parse_blast_radius_depth_zero,
    r#"host:web-01 | blast_radius(depth:0)"#
);
error_case!(
    parse_blast_radius_bad_direction,
    r#"host:web-01 | blast_radius(direction:sideways)"#
);
error_case!(
    parse_blast_radius_unknown_option,
    r#"host:web-01 | blast_radius(hops:2)"#
);
error_case!(
    parse_blast_radius_option_twice,
    r#"host:web-01 | blast_radius(depth:2, depth:3)"#
);
error_case!(
    parse_blast_radius_unclosed,
    r#"host:web-01 | blast_radius(depth:2"#
);
error_case!(blast_radius_without_start, r#"| blast_radius(depth:2)"#);
error_case!(
    blast_radius_from_two_nodes,
    r#"host:web-01 OR host:web-02 | blast_radius()"#
);
error_case!(
    blast_radius_with_sort,
    r#"host:web-01 | blast_radius() | sort:hops"#
);
error_case!(
    parse_too_deep_parens,
    format!("{}a{}", "(".repeat(40), ")".repeat(40))
);
error_case!(parse_too_deep_negations, format!("{}a", "NOT ".repeat(40)));
error_case!(parse_too_many_terms, vec!["a"; 200].join(" "));
error_case!(
    parse_too_many_list_items,
    format!("host:({})", vec!["h"; 200].join(","))
);
error_case!(parse_too_long, "a".repeat(5000));

// ---- compiler --------------------------------------------------------------------------
error_case!(unknown_field_did_you_mean, r#"hots:web-01"#);
error_case!(unknown_field_several_suggestions, r#"proc.nme:sshd"#);
error_case!(unknown_field_no_suggestion, r#"zzzzzzzz:1"#);
error_case!(unknown_field_for_entity, r#"in:metrics hots:web-01"#);
error_case!(
    attributes_key_outside_events,
    r#"in:processes attributes.foo:bar"#
);
error_case!(unknown_entity, r#"in:things"#);
error_case!(entity_not_a_word, r#"in:(events,logs)"#);
error_case!(directive_inside_or, r#"in:logs OR host:web-01"#);
error_case!(directive_inside_not, r#"NOT time:last_24h"#);

error_case!(bad_time_word, r#"time:whenever"#);
error_case!(bad_time_relative_unit, r#"time:last_24y"#);
error_case!(bad_time_range_end, r#"time:[2026-11-01,nope]"#);
error_case!(bad_time_compare, r#"time:>=soon"#);
error_case!(bad_time_pattern, r#"time:2026-*"#);
error_case!(bad_time_on_ts_field, r#"ts:nope"#);
error_case!(bad_severity, r#"severity:urgent"#);
error_case!(bad_severity_compare, r#"severity:>=urgent"#);
error_case!(
    bad_severity_in_list_search_path,
    r#"severity:(high,urgent) shell"#
);
error_case!(severity_range, r#"severity:[low,high]"#);
error_case!(bad_cidr_prefix, r#"ip:10.0.0.0/33"#);
error_case!(bad_ip_connections, r#"in:connections remote_ip:10.0.0.300"#);
error_case!(bad_ip_list_search_path, r#"ip:(10.0.0.1,nope)"#);
error_case!(ip_compare, r#"in:connections remote_ip:>10.0.0.1"#);
error_case!(ip_compare_search_path, r#"ip:>10.0.0.1"#);
error_case!(bad_whole_number, r#"in:connections remote_port:http"#);
error_case!(
    bad_whole_number_in_list,
    r#"in:connections remote_port:(22,ssh)"#
);
error_case!(bad_number_compare, r#"in:metrics value:>high"#);
error_case!(bad_whole_number_search_path, r#"dst_port:>abc shell"#);
error_case!(wildcard_on_number, r#"in:connections remote_port:*22*"#);
error_case!(wildcard_on_number_search_path, r#"dst_port:*22* shell"#);
error_case!(keyword_compare, r#"host:>web"#);
error_case!(keyword_compare_search_path, r#"host:>web shell"#);
error_case!(keyword_range, r#"host:[a,b]"#);
error_case!(text_field_compare, r#"in:vulns title:>x"#);
error_case!(text_field_range_search_path, r#"message:[a,b]"#);
error_case!(json_field, r#"attributes:foo"#);
error_case!(json_field_metrics, r#"in:metrics labels:cpu"#);
error_case!(json_field_search_path, r#"attributes:foo shell"#);
error_case!(uuid_wildcard, r#"id:*abc*"#);
error_case!(uuid_malformed, r#"id:not-a-uuid"#);
error_case!(sort_non_time_search_path, r#"shell | sort:host"#);
error_case!(sort_unknown_field, r#"host:a | sort:hots"#);
error_case!(sort_search_only_field, r#"host:a | sort:ip"#);
error_case!(sort_directive_not_a_word, r#"sort:(ts,host)"#);
error_case!(limit_directive_not_a_number, r#"limit:ten"#);
error_case!(stats_directive_not_a_phrase, r#"stats:(a,b)"#);
error_case!(stats_directive_bad_spec, r#"stats:"count( by host""#);
error_case!(stats_non_numeric_field, r#"| stats avg(host)"#);
error_case!(stats_sum_without_field, r#"| stats sum()"#);
error_case!(
    stats_unknown_aggregate_field,
    r#"in:metrics | stats max(vale)"#
);
error_case!(stats_search_only_field, r#"| stats count(message)"#);
error_case!(stats_unknown_group_field, r#"| stats count() by hots"#);
error_case!(stats_group_by_search_only_field, r#"| stats count() by ip"#);
error_case!(
    stats_bucket_non_time_field,
    r#"| stats count() by bucket(host, 1h)"#
);
error_case!(
    stats_bad_bucket_width,
    r#"| stats count() by bucket(ts, 1y)"#
);
error_case!(
    stats_zero_bucket_width,
    r#"| stats count() by bucket(ts, 0h)"#
);
error_case!(
    sort_unknown_stats_column,
    r#"| stats count() by host | sort:total"#
);
error_case!(
    sort_unknown_stats_column_search_path,
    r#"shell | stats count() as n by host | sort:count"#
);
error_case!(
    similar_to_over_metrics,
    r#"in:metrics name:cpu | SIMILAR_TO("high load")"#
);
error_case!(
    similar_to_after_stats,
    r#"shell | stats count() by host | SIMILAR_TO("x")"#
);
error_case!(
    similar_to_with_sort,
    r#"host:a | sort:ts | SIMILAR_TO("x")"#
);
error_case!(
    group_similar_with_similar_to,
    r#"| SIMILAR_TO("x") | group_similar"#
);
error_case!(group_similar_over_vulns, r#"in:vulns | group_similar"#);
error_case!(
    group_similar_with_sort,
    r#"host:a | group_similar | sort:ts"#
);
error_case!(
    parse_group_similar_arguments,
    r#"host:a | group_similar(0.8)"#
);
