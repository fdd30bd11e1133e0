//! Dead letters: the original payload republished on `dlq.<original subject>`
//! with the reason in the `Palisade-Error` header.

use async_nats::{jetstream, HeaderMap};
use palisade_core::store::DeadLetter;

use crate::Namespace;

/// Header carrying why a message was dead-lettered.
pub const ERROR_HEADER: &str = "Palisade-Error";
/// Header carrying the original stream and sequence (`STREAM/SEQ`).
pub const ORIGIN_HEADER: &str = "Palisade-Origin";

/// Longest reason kept in a header.
const MAX_REASON: usize = 1024;

/// The dead-letter subject of `subject` (a published subject, namespace included).
pub fn dlq_subject(namespace: &Namespace, subject: &str) -> String {
    namespace.subject(&format!("dlq.{}", namespace.strip(subject)))
}

/// A reason fit for a NATS header: one line, bounded.
pub fn header_safe(reason: &str) -> String {
    let mut line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    line.truncate(line.trim_end().len());
    line
}

/// Publishes `dead` to its DLQ subject and waits for JetStream to store it. The
/// `Nats-Msg-Id` is the origin, so a retried publish is stored once.
pub async fn publish(
    js: &jetstream::Context,
    namespace: &Namespace,
    dead: &DeadLetter,
) -> Result<(), String> {
    let mut headers = HeaderMap::new();
    let origin = format!("{}/{}", dead.position.stream, dead.position.seq);
    headers.insert(ERROR_HEADER, header_safe(&dead.reason).as_str());
    headers.insert(ORIGIN_HEADER, origin.as_str());
    headers.insert("Nats-Msg-Id", format!("dlq/{origin}").as_str());
    let subject = dlq_subject(namespace, &dead.position.subject);
    js.publish_with_headers(subject, headers, dead.payload.clone().into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlq_subjects_keep_the_namespace() {
        assert_eq!(
            dlq_subject(&Namespace::root(), "falco.error.x"),
            "dlq.falco.error.x"
        );
        let ns = Namespace::named("t1");
        assert_eq!(dlq_subject(&ns, "t1.logs.auth"), "t1.dlq.logs.auth");
    }

    #[test]
    fn reasons_become_one_bounded_line() {
        assert_eq!(header_safe("bad\nthing\r\n"), "bad thing");
        assert_eq!(header_safe(&"x".repeat(5000)).len(), MAX_REASON);
    }
}
