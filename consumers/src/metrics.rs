//! Prometheus metrics of the ingest path, served by the application at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use prometheus_client::registry::Registry;

/// Labels naming a projection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionLabels {
    /// Projection name.
    pub projection: String,
}

/// Labels naming a projection's consumer on one stream.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    /// Projection name.
    pub projection: String,
    /// Stream name.
    pub stream: String,
}

fn batch_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// The ingest metrics.
#[derive(Debug)]
pub struct IngestMetrics {
    /// Messages taken from the streams.
    pub messages_in: Family<ProjectionLabels, Counter>,
    /// Rows newly written (replayed duplicates are not counted).
    pub rows_written: Family<ProjectionLabels, Counter>,
    /// Records in committed batches (new or already present).
    pub records: Family<ProjectionLabels, Counter>,
    /// Messages sent to the dead-letter subjects.
    pub dead_letters: Family<ProjectionLabels, Counter>,
    /// Batches retried after a transient fault.
    pub write_retries: Family<ProjectionLabels, Counter>,
    /// Time from a batch being formed to its commit, in seconds.
    pub batch_seconds: Family<ProjectionLabels, Histogram, fn() -> Histogram>,
    /// Messages in the stream not yet acknowledged by the consumer.
    pub consumer_lag: Family<ConsumerLabels, Gauge>,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        IngestMetrics {
            messages_in: Family::default(),
            rows_written: Family::default(),
            records: Family::default(),
            dead_letters: Family::default(),
            write_retries: Family::default(),
            batch_seconds: Family::new_with_constructor(batch_histogram),
            consumer_lag: Family::default(),
        }
    }
}

impl IngestMetrics {
    /// Registers every metric under the `palisade_ingest` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("palisade_ingest");
        sub.register(
            "messages",
            "Messages taken from the streams",
            self.messages_in.clone(),
        );
        sub.register(
            "rows_written",
            "Rows newly written to PostgreSQL",
            self.rows_written.clone(),
        );
        sub.register(
            "records",
            "Records in committed batches",
            self.records.clone(),
        );
        sub.register(
            "dead_letters",
            "Messages sent to dlq.<subject>",
            self.dead_letters.clone(),
        );
        sub.register(
            "write_retries",
            "Batch writes retried after a transient fault",
            self.write_retries.clone(),
        );
        sub.register(
            "batch_seconds",
            "Batch latency from formation to commit",
            self.batch_seconds.clone(),
        );
        sub.register(
            "consumer_lag",
            "Messages not yet acknowledged by the consumer",
            self.consumer_lag.clone(),
        );
    }

    /// Creates every per-projection series at zero, so a scrape shows
    /// `dead_letters_total 0` rather than no series at all.
    pub fn init_projection(&self, projection: &str) {
        let labels = Self::labels(projection);
        drop(self.messages_in.get_or_create(&labels));
        drop(self.rows_written.get_or_create(&labels));
        drop(self.records.get_or_create(&labels));
        drop(self.dead_letters.get_or_create(&labels));
        drop(self.write_retries.get_or_create(&labels));
        drop(self.batch_seconds.get_or_create(&labels));
    }

    /// Labels of `projection`.
    pub fn labels(projection: &str) -> ProjectionLabels {
        ProjectionLabels {
            projection: projection.to_owned(),
        }
    }
}
