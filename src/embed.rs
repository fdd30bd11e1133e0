//! `palisade embed`: embed texts with the MiniLM model and print the vectors as JSON,
//! to try the model (and the `SIMILAR_TO` query side) by hand.

use anyhow::Context as _;
use palisade_embeddings::{Embedder, EmbedderConfig, ModelVariant, DIMENSIONS};

/// Arguments of `palisade embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// The texts, one vector each (embedded as given, not through the event text function).
    #[arg(required = true)]
    texts: Vec<String>,
    /// Run the fp32 model.
    #[arg(long, conflicts_with = "int8")]
    fp32: bool,
    /// Run the int8 model (the default unless PALISADE_EMBED_VARIANT says fp32).
    #[arg(long)]
    int8: bool,
}

/// Loads the model as `EmbedderConfig::from_env` finds it and prints
/// `{"model": …, "dimensions": 384, "vectors": [[…], …]}`.
pub async fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let mut config = EmbedderConfig::from_env()?;
    if args.fp32 {
        config.variant = ModelVariant::Fp32;
    } else if args.int8 {
        config.variant = ModelVariant::Int8;
    }
    let texts = args.texts;
    let (model, vectors) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let embedder = Embedder::load(&config)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        Ok((embedder.model_id(), embedder.embed_batch(&refs)?))
    })
    .await
    .context("the embedding thread panicked")??;
    let answer = serde_json::json!({"model": model, "dimensions": DIMENSIONS, "vectors": vectors});
    println!("{}", serde_json::to_string(&answer)?);
    Ok(())
}
