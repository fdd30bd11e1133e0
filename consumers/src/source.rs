//! Stage 1, source: a projection's durable pull consumer on one stream, yielding
//! deliveries (payload, stream position, ack handle).

use async_nats::jetstream::{self, consumer, message::Acker};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use palisade_core::store::Position;

use crate::{projection::Binding, IngestConfig, IngestError, Projection};

/// One message taken from a stream, not yet acknowledged.
pub struct Delivery {
    /// Where it sits in the stream.
    pub position: Position,
    /// Its payload.
    pub payload: Bytes,
    /// Acknowledges it; rides with the batch until the write has committed.
    pub acker: Acker,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// The consumer configuration a projection uses on one stream. `durable` is
/// `None` for the ephemeral consumers of a replay.
pub fn consumer_config(
    projection: Projection,
    binding: &Binding,
    config: &IngestConfig,
    durable: bool,
) -> consumer::pull::Config {
    let in_flight = config.batch_max_messages * config.writers.max(1) * 4;
    consumer::pull::Config {
        durable_name: durable.then(|| projection.durable_name()),
        description: Some(format!("palisade {} projection", projection.name())),
        filter_subjects: binding
            .filters
            .iter()
            .map(|s| config.namespace.subject(s))
            .collect(),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_ack_pending: i64::try_from(in_flight).unwrap_or(i64::MAX),
        inactive_threshold: if durable {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_secs(60)
        },
        ..Default::default()
    }
}

/// Creates (or updates) the consumer of `projection` on `binding`'s stream.
pub async fn open_consumer(
    js: &jetstream::Context,
    projection: Projection,
    binding: &Binding,
    config: &IngestConfig,
    durable: bool,
) -> Result<consumer::PullConsumer, IngestError> {
    let stream = binding.family.name(&config.namespace);
    js.create_consumer_on_stream(
        consumer_config(projection, binding, config, durable),
        &stream,
    )
    .await
    .map_err(|e| {
        IngestError::jetstream(
            format!("create consumer {} on {stream}", projection.name()),
            e,
        )
    })
}

/// The deliveries of `consumer`, pulled continuously. Ends when the consumer is
/// deleted or the pull is refused; transient pull errors are logged and skipped.
pub async fn deliveries(
    consumer: &consumer::PullConsumer,
    config: &IngestConfig,
) -> Result<impl Stream<Item = Delivery> + use<>, IngestError> {
    let messages = consumer
        .stream()
        .max_messages_per_batch(config.batch_max_messages * 2)
        .heartbeat(std::time::Duration::from_secs(5))
        .expires(std::time::Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| IngestError::jetstream("pull messages", e))?;
    Ok(messages
        .take_while(|item| {
            let go_on = match item {
                Err(e) => {
                    use consumer::pull::MessagesErrorKind as K;
                    tracing::warn!(error = %e, "pull error");
                    !matches!(
                        e.kind(),
                        K::ConsumerDeleted | K::PushBasedConsumer | K::RequestLimitExceeded
                    )
                }
                Ok(_) => true,
            };
            std::future::ready(go_on)
        })
        .filter_map(|item| std::future::ready(item.ok().and_then(into_delivery))))
}

fn into_delivery(message: jetstream::Message) -> Option<Delivery> {
    let position = match message.info() {
        Ok(info) => Position {
            stream: info.stream.to_owned(),
            seq: info.stream_sequence,
            subject: message.subject.to_string(),
        },
        Err(e) => {
            tracing::warn!(error = %e, subject = %message.subject, "message without jetstream metadata");
            return None;
        }
    };
    let (message, acker) = message.split();
    Some(Delivery {
        position,
        payload: message.payload,
        acker,
    })
}
