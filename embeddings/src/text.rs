//! What text of an event gets embedded: [`embedding_text`].
//!
//! The salient fields, not the whole formatted line (DESIGN.md §7): Falco's output
//! sentence wraps a short command in boilerplate that drowns it (a probe found 52% of
//! command variants in the top 10 with bare commands, 35% with Falco's sentences).
//! Parts are joined with ` | `; runs of white space become one space; the text is cut
//! at [`MAX_TEXT_BYTES`] (the tokenizer keeps at most 256 tokens anyway).
//!
//! | kind | text |
//! |---|---|
//! | `falco_alert` (syscall) | rule \| `proc.cmdline` \| file or connection (`fd.name`, else `fs.path.name`, `evt.arg.path`, `evt.arg.name`, `evt.arg.oldpath`) \| process and parent: `<proc.name> parent <proc.pname>` (the name left out when the command line's program is it) |
//! | `falco_alert` (k8s_audit) | rule \| `ka.uri.param[command]` \| `<ka.verb> <ka.target.resource>[/<subresource>] [<namespace>/]<name>` \| `user <ka.user.name>` |
//! | `falco_alert` without any of these | rule \| the output sentence without its time and priority |
//! | `malware_finding` | signature \| file path |
//! | `log` | `<program>: <message>`: the program from the `program` attribute or the line's syslog tag; the syslog header (priority, time, host, `[pid]`), ISO 8601, kernel and access-log timestamps and `pid=N`/`ppid=N` fields removed |
//! | anything else (`xdp_drop`) | rule \| message (already a summary without time), the rule left out when the message holds it |
//!
//! Falco's `<NA>`, nulls and empty values count as absent; the `container:<id>`
//! command line Falco reports for container starts is left out. The text of a log line
//! is the same whether the agent shipped the raw syslog line or parsed it into
//! `program` and `message`.
//!
//! Changing any of this changes the vectors: bump [`TEXT_VERSION`], which is stored
//! beside each vector, and re-embed.

use serde_json::Value;

use crate::EventView;

/// Version of [`embedding_text`]'s output; stored with each vector.
pub const TEXT_VERSION: u16 = 1;

/// Longest embedding text in bytes (cut at a character boundary).
pub const MAX_TEXT_BYTES: usize = 2048;

/// The text to embed for `event`; see the [module docs](self).
pub fn embedding_text(event: &EventView) -> String {
    let parts = match event.kind {
        "falco_alert" => falco_parts(event),
        "malware_finding" => malware_parts(event),
        "log" => vec![log_text(event)],
        _ => other_parts(event),
    };
    let joined = parts
        .iter()
        .map(|p| collapse_whitespace(p))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    cut(joined, MAX_TEXT_BYTES)
}

/// A Falco output field: under `output_fields`, else at the top of the attributes.
/// Nulls, empty strings and Falco's `<NA>` are absent.
fn falco_field<'a>(event: &EventView<'a>, key: &str) -> Option<&'a str> {
    let attributes = event.attributes;
    let value = attributes
        .get("output_fields")
        .and_then(Value::as_object)
        .and_then(|fields| fields.get(key))
        .or_else(|| attributes.get(key))?;
    value
        .as_str()
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "<NA>")
}

fn falco_parts(event: &EventView) -> Vec<String> {
    let field = |key| falco_field(event, key);
    let mut parts: Vec<String> = event.rule.map(str::to_owned).into_iter().collect();
    let rule_only = parts.len();

    let cmdline = field("proc.cmdline").filter(|c| !c.starts_with("container:"));
    parts.extend(cmdline.map(str::to_owned));
    let file = [
        "fd.name",
        "fs.path.name",
        "evt.arg.path",
        "evt.arg.name",
        "evt.arg.oldpath",
    ]
    .into_iter()
    .find_map(field);
    parts.extend(file.map(str::to_owned));
    let program = cmdline
        .and_then(|c| c.split_whitespace().next())
        .and_then(|p| p.rsplit('/').next());
    let name = field("proc.name").filter(|n| Some(*n) != program);
    match (name, field("proc.pname")) {
        (Some(name), Some(parent)) => parts.push(format!("{name} parent {parent}")),
        (None, Some(parent)) => parts.push(format!("parent {parent}")),
        (Some(name), None) => parts.push(name.to_owned()),
        (None, None) => {}
    }

    // Kubernetes audit alerts.
    parts.extend(field("ka.uri.param[command]").map(str::to_owned));
    let mut target = String::new();
    if let Some(verb) = field("ka.verb") {
        target.push_str(verb);
    }
    if let Some(resource) = field("ka.target.resource") {
        push_word(&mut target, resource);
        if let Some(sub) = field("ka.target.subresource") {
            target.push('/');
            target.push_str(sub);
        }
    }
    match (field("ka.target.namespace"), field("ka.target.name")) {
        (Some(ns), Some(name)) => push_word(&mut target, &format!("{ns}/{name}")),
        (None, Some(name)) => push_word(&mut target, name),
        _ => {}
    }
    parts.push(target);
    parts.extend(field("ka.user.name").map(|user| format!("user {user}")));

    parts.retain(|p| !p.is_empty());
    if parts.len() == rule_only {
        parts.push(strip_falco_prefix(event.message).to_owned());
    }
    parts
}

/// Falco's output without its leading `HH:MM:SS.nnnnnnnnn: Priority ` (the time is in
/// the event; the priority is its severity).
fn strip_falco_prefix(output: &str) -> &str {
    let Some((time, rest)) = output.split_once(": ") else {
        return output;
    };
    if !time
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
    {
        return output;
    }
    const PRIORITIES: [&str; 8] = [
        "Emergency",
        "Alert",
        "Critical",
        "Error",
        "Warning",
        "Notice",
        "Informational",
        "Debug",
    ];
    PRIORITIES
        .iter()
        .find_map(|p| rest.strip_prefix(p).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or(rest)
}

fn malware_parts(event: &EventView) -> Vec<String> {
    match (
        event.attr("signature").or(event.rule),
        event.attr("file_path"),
    ) {
        (Some(signature), Some(path)) => vec![signature.to_owned(), path.to_owned()],
        _ => other_parts(event),
    }
}

fn other_parts(event: &EventView) -> Vec<String> {
    let message = strip_timestamps(event.message);
    match event.rule.map(str::trim).filter(|r| !r.is_empty()) {
        Some(rule) if !message.contains(rule) => vec![rule.to_owned(), message],
        _ => vec![message],
    }
}

/// `<program>: <message>` without syslog header, timestamps and pids.
fn log_text(event: &EventView) -> String {
    let (tag, body) = split_syslog_header(event.message);
    let body = strip_pid_fields(&strip_timestamps(body));
    let body = body.trim();
    match event.attr("program").or(tag) {
        Some(program) if body.is_empty() => program.to_owned(),
        Some(program) => format!("{program}: {body}"),
        None => body.to_owned(),
    }
}

/// Splits a syslog line into its program (from the tag) and the message after the
/// header: `[<PRI>][TIMESTAMP [HOST ]]PROGRAM[[PID]]: MESSAGE`. Without a timestamp
/// only a tag with a pid (`sshd[1234]:`) is taken as a tag, so a message such as
/// `error: …` is kept whole.
fn split_syslog_header(line: &str) -> (Option<&str>, &str) {
    let line = line.trim_start();
    let line = strip_priority(line);
    let (stamped, rest) = match timestamp_len(line) {
        Some(n) => (true, line[n..].trim_start()),
        None => (false, line),
    };
    let mut words = rest.splitn(3, ' ');
    let first = words.next().unwrap_or("");
    let second = words.next();
    if let Some(program) = tag_program(first, !stamped) {
        return (Some(program), rest[first.len()..].trim_start());
    }
    if stamped {
        // The first word is the host when the second is the tag.
        if let Some(program) = second.and_then(|w| tag_program(w, false)) {
            let skip = first.len() + 1 + second.map_or(0, str::len);
            return (Some(program), rest[skip..].trim_start());
        }
        return (None, rest);
    }
    (None, line)
}

/// `<PRI>` at the start of a raw syslog line.
fn strip_priority(line: &str) -> &str {
    line.strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .filter(|(pri, _)| {
            !pri.is_empty() && pri.len() <= 3 && pri.bytes().all(|b| b.is_ascii_digit())
        })
        .map_or(line, |(_, rest)| rest)
}

/// The program of a syslog tag word (`sshd[1234]:`, `sudo:`); with `need_pid` only the
/// first form.
fn tag_program(word: &str, need_pid: bool) -> Option<&str> {
    let word = word.strip_suffix(':')?;
    let (program, pid) = match word.split_once('[') {
        Some((program, pid)) => (program, Some(pid.strip_suffix(']')?)),
        None => (word, None),
    };
    let program_ok = !program.is_empty()
        && program
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    let pid_ok = match pid {
        Some(pid) => !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()),
        None => !need_pid,
    };
    (program_ok && pid_ok).then_some(program)
}

/// Length of a timestamp at the start of `s`: RFC 3164 (`Feb  3 21:54:44`) or
/// ISO 8601 with a time (`2026-11-24T13:59:41.123Z`, `2026-11-24 13:59:41,123`).
fn timestamp_len(s: &str) -> Option<usize> {
    rfc3164_len(s).or_else(|| iso8601_len(s))
}

fn rfc3164_len(s: &str) -> Option<usize> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    if !MONTHS.iter().any(|m| s.starts_with(m)) || b.get(3) != Some(&b' ') {
        return None;
    }
    let mut i = 4;
    if b.get(i) == Some(&b' ') {
        i += 1;
    }
    let day = digits(b, i);
    if day == 0 || day > 2 {
        return None;
    }
    i += day;
    if b.get(i) != Some(&b' ') {
        return None;
    }
    let n = clock_len(b, i + 1)?;
    Some(i + 1 + n)
}

/// `HH:MM:SS` with an optional fraction, at `i`.
fn clock_len(b: &[u8], i: usize) -> Option<usize> {
    let two = |at: usize| digits(b, at) == 2;
    if !(two(i) && b.get(i + 2) == Some(&b':') && two(i + 3)) {
        return None;
    }
    let mut n = 5;
    if b.get(i + 5) == Some(&b':') && two(i + 6) {
        n = 8;
        if matches!(b.get(i + 8), Some(b'.' | b',')) && digits(b, i + 9) > 0 {
            n += 1 + digits(b, i + 9);
        }
    }
    Some(n)
}

fn iso8601_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let date_ok = digits(b, 0) == 4
        && b.get(4) == Some(&b'-')
        && digits(b, 5) == 2
        && b.get(7) == Some(&b'-')
        && digits(b, 8) == 2;
    if !date_ok || !matches!(b.get(10), Some(b'T' | b' ')) {
        return None;
    }
    let mut n = 11 + clock_len(b, 11)?;
    match b.get(n) {
        Some(b'Z') => n += 1,
        Some(b'+' | b'-') if digits(b, n + 1) == 2 => {
            n += 3;
            if b.get(n) == Some(&b':') && digits(b, n + 1) == 2 {
                n += 3;
            } else if digits(b, n) == 2 {
                n += 2;
            }
        }
        _ => {}
    }
    Some(n)
}

/// How many ASCII digits start at `i`.
fn digits(b: &[u8], i: usize) -> usize {
    b.get(i..).map_or(0, |rest| {
        rest.iter().take_while(|c| c.is_ascii_digit()).count()
    })
}

/// Removes a leading RFC 3164 timestamp, and ISO 8601 timestamps, kernel timestamps
/// (`[ 1234.567890]`) and access-log timestamps (`[24/Nov/2026:13:59:41 +0000]`)
/// anywhere.
fn strip_timestamps(text: &str) -> String {
    let mut text = text.trim_start();
    if let Some(n) = rfc3164_len(text) {
        text = text[n..].trim_start();
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let skip = if boundary {
            let rest = &text[i..];
            iso8601_len(rest)
                .or_else(|| access_stamp_len(rest))
                .or_else(|| kernel_stamp_len(rest))
        } else {
            None
        };
        match skip {
            Some(n) => i += n,
            None => {
                let ch = text[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&text[i..i + ch]);
                i += ch;
            }
        }
    }
    out
}

/// `[ 1234.567890]` (seconds since boot) at the start.
fn kernel_stamp_len(s: &str) -> Option<usize> {
    let inner = s.strip_prefix('[')?;
    let close = inner.find(']')?;
    let stamp = inner[..close].trim_start();
    let (secs, frac) = stamp.split_once('.')?;
    let numeric = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    (numeric(secs) && numeric(frac)).then_some(close + 2)
}

/// `[dd/Mon/yyyy:HH:MM:SS zone]` at the start.
fn access_stamp_len(s: &str) -> Option<usize> {
    let inner = s.strip_prefix('[')?;
    let close = inner.find(']')?;
    let stamp = &inner[..close];
    let b = stamp.as_bytes();
    let ok = digits(b, 0) == 2
        && b.get(2) == Some(&b'/')
        && b.get(3..6)
            .is_some_and(|m| m.iter().all(u8::is_ascii_alphabetic))
        && b.get(6) == Some(&b'/')
        && digits(b, 7) == 4
        && b.get(11) == Some(&b':')
        && clock_len(b, 12).is_some();
    ok.then_some(close + 2)
}

/// Drops `pid=N` and `ppid=N` words (keeping trailing punctuation out too).
fn strip_pid_fields(text: &str) -> String {
    text.split(' ')
        .filter(|word| {
            let word = word.trim_end_matches([',', ';', ')']);
            let value = word
                .strip_prefix("pid=")
                .or_else(|| word.strip_prefix("ppid="));
            !value.is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn push_word(text: &mut String, word: &str) {
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(word);
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{json, Map};

    use super::*;

    const FALCO_ALERTS: &str = include_str!("../../tests/fixtures/falco/alerts.jsonl");
    const AUTH_LOG: &str = include_str!("../../tests/fixtures/logs/beats_system_auth_test.log");

    /// The text of each real Falco alert, shaped as core's decoder shapes it: the
    /// output fields under `attributes.output_fields`.
    fn falco_texts() -> Vec<String> {
        FALCO_ALERTS
            .lines()
            .map(|line| {
                let alert: Value = serde_json::from_str(line).unwrap();
                let mut attributes = Map::new();
                attributes.insert("output_fields".into(), alert["output_fields"].clone());
                let view = EventView {
                    kind: "falco_alert",
                    source: alert["source"].as_str().unwrap_or("syscall"),
                    severity_level: 2,
                    rule: alert["rule"].as_str(),
                    message: alert["output"].as_str().unwrap(),
                    attributes: &attributes,
                };
                embedding_text(&view)
            })
            .collect()
    }

    fn log_view<'a>(message: &'a str, attributes: &'a Map<String, Value>) -> EventView<'a> {
        EventView {
            kind: "log",
            source: "auth",
            severity_level: 0,
            rule: None,
            message,
            attributes,
        }
    }

    #[test]
    fn falco_syscall_alerts_give_rule_command_file_and_process() {
        let texts = falco_texts();
        // Line 4: no proc.name, so the parent alone.
        assert_eq!(
            texts[3],
            "Write below binary dir | touch /bin/should_not_be_here | /bin/should_not_be_here | parent bash"
        );
        // Line 5: proc.name vi is the command's program, so only the parent is added.
        assert_eq!(
            texts[4],
            "Write below etc | vi /etc/falco/falco.yaml | /etc/falco/.falco.yaml.swp | parent sudo"
        );
        // Line 9: fd.name is null, the renamed file comes from evt.arg.oldpath.
        assert_eq!(
            texts[8],
            "Delete or rename shell history | bash | /home/josevnz/.bash_history-18959.tmp"
        );
        assert_eq!(
            texts[9],
            "Write below root | audit2allow -Es /usr/bin/audit2allow -M my-rpcpipefsgene | /root/my-rpcpipefsgene.te | parent bash"
        );
        // Line 13: container shell; a connection in line 22.
        assert_eq!(
            texts[12],
            "Terminal shell in container | sh -c clear; (bash || ash || sh) | parent runc"
        );
        assert_eq!(
            texts[21],
            "Contact K8S API Server From Container | handler | 172.17.0.9:43812->10.96.0.1:443"
        );
    }

    #[test]
    fn falco_k8s_audit_alerts_give_rule_command_target_and_user() {
        let texts = falco_texts();
        assert_eq!(
            texts[16],
            "Attach/Exec Pod | cat | pods/exec hello-app/nginx-676b6c5bbc-4xc6t | user kubernetes-admin"
        );
        assert_eq!(
            texts[14],
            "Disallowed K8s User | patch events my-pool-1.18051c0a88716868 | user yacht"
        );
    }

    #[test]
    fn falco_alerts_without_salient_fields_fall_back_to_the_bare_output_sentence() {
        let texts = falco_texts();
        assert_eq!(
            texts[0],
            "Launch Privileged Container | Privileged container started (user=root user_loginuid=0 \
             command=container:bfb9637a47a6 kind_lumiere (id=bfb9637a47a6) image=fedora:latest)"
        );
        for (i, text) in texts.iter().enumerate() {
            assert!(!text.contains("<NA>"), "line {}: {text}", i + 1);
            assert!(
                !text.starts_with(|c: char| c.is_ascii_digit()),
                "line {}: {text}",
                i + 1
            );
            assert!(!text.contains("Informational"), "line {}: {text}", i + 1);
        }
    }

    #[test]
    fn falco_fields_at_the_top_of_the_attributes_count_too() {
        let top = attributes(
            json!({"proc.cmdline": "cat /etc/shadow", "fd.name": "/etc/shadow", "proc.name": "cat", "proc.pname": "bash"}),
        );
        let view = EventView {
            kind: "falco_alert",
            source: "syscall",
            severity_level: 2,
            rule: Some("Read sensitive file untrusted"),
            message: "12:00:00.000000000: Warning Sensitive file opened for reading by non-trusted program (...)",
            attributes: &top,
        };
        assert_eq!(
            embedding_text(&view),
            "Read sensitive file untrusted | cat /etc/shadow | /etc/shadow | parent bash"
        );
        // The process name stays when the command line does not start with it.
        let python = attributes(
            json!({"output_fields": {"proc.cmdline": "/usr/bin/python3 -c 'import pty; pty.spawn(\"/bin/sh\")'", "proc.name": "python3.11", "proc.pname": "nginx"}}),
        );
        let view = EventView {
            rule: Some("Run shell untrusted"),
            attributes: &python,
            ..view
        };
        assert_eq!(
            embedding_text(&view),
            "Run shell untrusted | /usr/bin/python3 -c 'import pty; pty.spawn(\"/bin/sh\")' | python3.11 parent nginx"
        );
    }

    #[test]
    fn raw_syslog_lines_lose_time_host_and_pid() {
        let empty = Map::new();
        let texts: Vec<String> = AUTH_LOG
            .lines()
            .map(|line| embedding_text(&log_view(line, &empty)))
            .collect();
        assert_eq!(texts[2], "sshd: Invalid user test from 10.0.2.2");
        assert_eq!(
            texts[3],
            "sshd: Failed password for root from 216.160.83.57 port 29160 ssh2"
        );
        assert_eq!(
            texts[7],
            "sudo: tsg : user NOT in sudoers ; TTY=pts/1 ; PWD=/home/vagrant ; USER=root ; COMMAND=/bin/ls"
        );
        assert_eq!(texts[8], "groupadd: new group: name=apache, GID=48");
        for text in &texts {
            for host in ["localhost", "slave22", "precise32"] {
                assert!(!text.contains(host), "{text}");
            }
            assert!(!text.contains('['), "{text}");
            assert!(!text.starts_with("Feb"), "{text}");
        }
    }

    #[test]
    fn parsed_log_lines_give_the_same_text_as_raw_ones() {
        // As `palisade load-fixtures` ships them: program and pid beside the message.
        for line in AUTH_LOG.lines() {
            let (tag, body) = line[16..].split_once(": ").unwrap();
            let program = tag.split(' ').nth(1).unwrap().split('[').next().unwrap();
            let attributes = attributes(json!({"program": program, "pid": 1234}));
            let parsed = embedding_text(&log_view(body.trim_start(), &attributes));
            let raw = embedding_text(&log_view(line, &Map::new()));
            assert_eq!(parsed, raw);
        }
    }

    #[test]
    fn timestamps_and_pids_inside_messages_are_removed() {
        let empty = Map::new();
        let text = |m| embedding_text(&log_view(m, &empty));
        assert_eq!(
            text("2026-11-24T13:59:41.123456+00:00 web-01 nginx[811]: upstream timed out pid=811, ppid=1 at 2026-11-24 13:59:40,120"),
            "nginx: upstream timed out at"
        );
        assert_eq!(
            text("kernel: [ 8123.456789] Out of memory: Killed process 4121 (java)"),
            "kernel: Out of memory: Killed process 4121 (java)"
        );
        assert_eq!(
            text(r#"203.0.113.9 - - [24/Nov/2026:13:59:41 +0000] "POST /login HTTP/1.1" 401 512"#),
            r#"203.0.113.9 - - "POST /login HTTP/1.1" 401 512"#
        );
        assert_eq!(
            text("<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8"),
            "su: 'su root' failed for lonvick on /dev/pts/8"
        );
        // No timestamp: only a tag with a pid is a tag.
        assert_eq!(
            text("error: kex_exchange_identification: read: Connection reset by peer"),
            "error: kex_exchange_identification: read: Connection reset by peer"
        );
        assert_eq!(
            text("sshd[99]: Connection closed"),
            "sshd: Connection closed"
        );
        // Numbers that only look like parts of times stay.
        assert_eq!(
            text("RSA 39:33:99:e9 port 2026"),
            "RSA 39:33:99:e9 port 2026"
        );
    }

    #[test]
    fn malware_findings_give_signature_and_path() {
        let attributes = attributes(
            json!({"signature": "Eicar-Signature", "file_path": "/tmp/eicar.com", "sha256": "275a02"}),
        );
        let view = EventView {
            kind: "malware_finding",
            source: "clamav",
            severity_level: 4,
            rule: Some("Eicar-Signature"),
            message: "malware Eicar-Signature in /tmp/eicar.com (pod prod/web-1)",
            attributes: &attributes,
        };
        assert_eq!(embedding_text(&view), "Eicar-Signature | /tmp/eicar.com");
    }

    #[test]
    fn xdp_drops_give_their_summary() {
        let empty = Map::new();
        let view = EventView {
            kind: "xdp_drop",
            source: "xdp",
            severity_level: 1,
            rule: Some("blocklist"),
            message:
                "xdp dropped 12 tcp packets 198.51.100.7:4444 -> 10.0.0.5:22 on eth0 (blocklist)",
            attributes: &empty,
        };
        assert_eq!(embedding_text(&view), view.message);
        let ruled = EventView {
            rule: Some("geo-block"),
            ..view
        };
        assert!(embedding_text(&ruled).starts_with("geo-block | xdp dropped"));
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let empty = Map::new();
        let long = "é".repeat(3000);
        let text = embedding_text(&log_view(&long, &empty));
        assert!(text.len() <= MAX_TEXT_BYTES && text.len() >= MAX_TEXT_BYTES - 1);
        assert!(text.chars().all(|c| c == 'é'));
        assert_eq!(embedding_text(&log_view("", &empty)), "");
    }

    fn attributes(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }
}
