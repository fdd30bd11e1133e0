//! The MiniLM embedder: the model's tokenizer and one ONNX Runtime session.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::Tensor;
use tokenizers::{Tokenizer, TruncationParams};
use tracing::{info, warn};

use crate::{EmbedError, EmbedderConfig, ModelVariant, DIMENSIONS, MODEL_NAME};

/// Longest input in tokens, `[CLS]` and `[SEP]` included; longer texts are cut. The
/// model was trained on 128 and takes up to 512; Palisade's embedding texts are short.
pub const MAX_TOKENS: usize = 256;

/// Name of the graph output read: mean-pooled and L2-normalised inside the graph.
const OUTPUT: &str = "sentence_embedding";

/// The ONNX Runtime environment: `ort` allows one per process, so the first embedder
/// creates it and every later one shares it.
static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

struct Runtime {
    env: Environment,
    dylib: PathBuf,
}

/// Token ids of a batch of texts, as [`Embedder::tokenize`] gives them: one row per
/// text, in the caller's order, `[CLS] … [SEP]`, at most [`MAX_TOKENS`], not padded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    ids: Vec<Vec<i64>>,
}

impl Encoded {
    /// The token ids of each text.
    pub fn ids(&self) -> &[Vec<i64>] {
        &self.ids
    }

    /// How many texts.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no texts.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Tokens over all texts, without padding.
    pub fn total_tokens(&self) -> usize {
        self.ids.iter().map(Vec::len).sum()
    }
}

/// all-MiniLM-L6-v2 through ONNX Runtime: text in, a unit-length 384-wide vector out.
///
/// Cheap to clone (the clones share one session), `Send` and `Sync`. Calls are blocking
/// and CPU-bound: from async code run them on `spawn_blocking`. One embedder runs one
/// inference at a time (the session sits behind a mutex, one sub-batch per lock); for
/// parallel inference load one embedder per worker.
#[derive(Clone)]
pub struct Embedder {
    inner: Arc<Inner>,
}

struct Inner {
    tokenizer: Tokenizer,
    runner: Mutex<Runner>,
    variant: ModelVariant,
    sub_batch: usize,
    execution_provider: &'static str,
}

struct Runner {
    session: Session,
    options: RunOptions<HasSelectedOutputs>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.model_id())
            .field("sub_batch", &self.inner.sub_batch)
            .field("execution_provider", &self.inner.execution_provider)
            .finish()
    }
}

impl Embedder {
    /// Loads the tokenizer and the ONNX file of `config.variant` from `config.model_dir`
    /// (loading ONNX Runtime first if this is the process's first embedder).
    ///
    /// Fails with a message naming `scripts/stack.sh model` when the files are missing.
    pub fn load(config: &EmbedderConfig) -> Result<Embedder, EmbedError> {
        let model_path = config.model_dir.join(config.variant.file_name());
        let tokenizer_path = config.model_dir.join("tokenizer.json");
        for path in [&model_path, &tokenizer_path] {
            if !path.is_file() {
                return Err(EmbedError::ModelMissing { path: path.clone() });
            }
        }
        let tokenizer = load_tokenizer(&tokenizer_path)?;
        let env = environment(config.ort_dylib.as_deref())?;

        let builder = session_builder(&env, config.threads.max(1), config.spin)?;
        let (session, execution_provider) = if config.cuda {
            match with_cuda(builder.clone(), &model_path) {
                Ok(session) => (session, "cuda"),
                Err(e) => {
                    warn!(error = %e, "cuda execution provider unavailable; embedding on the cpu");
                    (commit(builder, &model_path)?, "cpu")
                }
            }
        } else {
            (commit(builder, &model_path)?, "cpu")
        };
        if execution_provider == "cuda" && config.variant == ModelVariant::Int8 {
            // Measured on an H200: onnxruntime runs the dynamically quantised layers
            // on the CPU and copies between the devices (~660 texts/s against fp32's
            // ~15,700 in runs of 32).
            warn!("int8 on the cuda execution provider runs its quantised layers on the cpu; use the fp32 variant on a gpu");
        }
        check_graph(&session, &model_path)?;
        let options = RunOptions::new()?.with_outputs(OutputSelector::no_default().with(OUTPUT));

        info!(
            model = %model_path.display(),
            variant = %config.variant,
            threads = config.threads,
            sub_batch = config.sub_batch,
            execution_provider,
            "embedding model loaded"
        );
        Ok(Embedder {
            inner: Arc::new(Inner {
                tokenizer,
                runner: Mutex::new(Runner { session, options }),
                variant: config.variant,
                sub_batch: config.sub_batch.max(1),
                execution_provider,
            }),
        })
    }

    /// Model and variant, e.g. `all-MiniLM-L6-v2:int8`: store it beside each vector.
    pub fn model_id(&self) -> String {
        format!("{MODEL_NAME}:{}", self.inner.variant)
    }

    /// The ONNX file this embedder runs.
    pub fn variant(&self) -> ModelVariant {
        self.inner.variant
    }

    /// `cuda` when the CUDA execution provider was registered, else `cpu`.
    pub fn execution_provider(&self) -> &'static str {
        self.inner.execution_provider
    }

    /// Embeds each text; the vectors come back in the order of `texts`, each
    /// [`DIMENSIONS`] wide with unit length. Equal to [`Embedder::tokenize`] followed by
    /// [`Embedder::embed_encoded`].
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encoded = self.tokenize(texts)?;
        self.embed_encoded(&encoded)
    }

    /// Embeds one text.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut vectors = self.embed_batch(&[text])?;
        Ok(vectors.pop().unwrap_or_default())
    }

    /// Tokenises each text with the model's WordPiece tokenizer: lowercased, `[CLS]`
    /// and `[SEP]` added, cut at [`MAX_TOKENS`], not padded.
    ///
    /// The texts are tokenised in parallel (the tokenizer's rayon pool;
    /// `TOKENIZERS_PARALLELISM=false` turns that off): on a GPU, one thread's
    /// tokenising was ~60% of a batch's time.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Encoded, EmbedError> {
        let tokenizer = &self.inner.tokenizer;
        let encodings = match tokenizer.encode_batch_fast(texts.to_vec(), true) {
            Ok(encodings) => encodings,
            // Again one by one, to name the text that failed.
            Err(batch_error) => {
                for (index, text) in texts.iter().enumerate() {
                    if let Err(e) = tokenizer.encode_fast(*text, true) {
                        return Err(EmbedError::Tokenize {
                            index,
                            message: e.to_string(),
                        });
                    }
                }
                return Err(EmbedError::Tokenize {
                    index: 0,
                    message: batch_error.to_string(),
                });
            }
        };
        let ids = encodings
            .iter()
            .map(|encoding| encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
            .collect();
        Ok(Encoded { ids })
    }

    /// Runs the model over tokenised texts. The texts are sorted by length and run in
    /// sub-batches of `sub_batch`, each padded only to its own longest text.
    ///
    /// With fp32 a text's vector does not depend on the other texts of the batch
    /// (cosine ≥ 0.9999 to the text embedded alone). With int8 it does, a little:
    /// onnxruntime's dynamic quantisation picks one activation scale per run, so the
    /// other texts and the padding move a vector about as far as int8 is from fp32
    /// (cosine ≈ 0.99, ≥ 0.97 for real texts).
    pub fn embed_encoded(&self, encoded: &Encoded) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids = encoded.ids();
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut vectors = vec![Vec::new(); ids.len()];
        for run in order.chunks(self.inner.sub_batch) {
            let rows: Vec<&[i64]> = run.iter().map(|&i| ids[i].as_slice()).collect();
            let embedded = self.run(&rows)?;
            for (&i, vector) in run.iter().zip(embedded) {
                vectors[i] = vector;
            }
        }
        Ok(vectors)
    }

    /// One inference over `rows`, padded to the longest.
    fn run(&self, rows: &[&[i64]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut input_ids = vec![0_i64; rows.len() * width];
        let mut attention_mask = vec![0_i64; rows.len() * width];
        for (row, tokens) in rows.iter().enumerate() {
            let start = row * width;
            input_ids[start..start + tokens.len()].copy_from_slice(tokens);
            attention_mask[start..start + tokens.len()].fill(1);
        }
        let shape = [rows.len(), width];
        let inputs = ort::inputs![
            "input_ids" => Tensor::from_array((shape, input_ids))?,
            "attention_mask" => Tensor::from_array((shape, attention_mask))?,
        ];

        let mut runner = self
            .inner
            .runner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Runner { session, options } = &mut *runner;
        let outputs = session.run_with_options(inputs, options)?;
        let (out_shape, data) = outputs[OUTPUT].try_extract_tensor::<f32>()?;
        if **out_shape != [rows.len() as i64, DIMENSIONS as i64] {
            return Err(ort::Error::new(format!(
                "{OUTPUT} has shape {out_shape:?}, expected [{}, {DIMENSIONS}]",
                rows.len()
            ))
            .into());
        }
        Ok(data.chunks_exact(DIMENSIONS).map(<[f32]>::to_vec).collect())
    }
}

/// The model's tokenizer.json with Palisade's settings: truncation at [`MAX_TOKENS`] and
/// no padding (the file ships truncation at 128 and fixed padding to 128).
fn load_tokenizer(path: &Path) -> Result<Tokenizer, EmbedError> {
    let error = |message: String| EmbedError::Tokenizer {
        path: path.to_path_buf(),
        message,
    };
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| error(e.to_string()))?;
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: MAX_TOKENS,
            ..TruncationParams::default()
        }))
        .map_err(|e| error(e.to_string()))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// The process's ONNX Runtime environment, loading the library from `dylib` (or
/// `libonnxruntime.so` from the loader's path) the first time.
fn environment(dylib: Option<&Path>) -> Result<Environment, EmbedError> {
    let wanted = dylib.map_or_else(|| PathBuf::from("libonnxruntime.so"), Path::to_path_buf);
    let mut runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(runtime) = runtime.as_ref() {
        if runtime.dylib != wanted {
            warn!(
                loaded = %runtime.dylib.display(),
                wanted = %wanted.display(),
                "onnx runtime is already loaded from another file; using that one"
            );
        }
        return Ok(runtime.env.clone());
    }
    if dylib.is_some() && !wanted.is_file() {
        return Err(EmbedError::Runtime {
            path: wanted,
            message: "no such file".into(),
        });
    }
    let builder = ort::init_from(&wanted).map_err(|e| EmbedError::Runtime {
        path: wanted.clone(),
        message: e.to_string(),
    })?;
    let env = builder
        .with_name("palisade")
        .with_telemetry(false)
        .build()?;
    info!(dylib = %wanted.display(), "onnx runtime loaded");
    *runtime = Some(Runtime {
        env: env.clone(),
        dylib: wanted,
    });
    Ok(env)
}

/// Session options: full graph optimisation, `threads` intra-op threads, one
/// inter-op thread. With `spin` the intra-op threads spin between a run's steps
/// and stop when it returns (an idle spinning thread would take a core from
/// PostgreSQL and the projections on a small box); without, they sleep between
/// steps too.
fn session_builder(env: &Environment, threads: usize, spin: bool) -> ort::Result<SessionBuilder> {
    Ok(Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(threads)?
        .with_inter_threads(1)?
        .with_intra_op_spinning(spin)?
        .with_inter_op_spinning(false)?
        .with_config_entry("session.force_spinning_stop", "1")?)
}

fn commit(mut builder: SessionBuilder, model: &Path) -> ort::Result<Session> {
    builder.commit_from_file(model)
}

/// A session with the CUDA execution provider, or an error when it cannot be registered.
fn with_cuda(builder: SessionBuilder, model: &Path) -> ort::Result<Session> {
    let mut builder =
        builder.with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])?;
    builder.commit_from_file(model)
}

/// Checks the inputs and output that [`Embedder::run`] relies on.
fn check_graph(session: &Session, path: &Path) -> Result<(), EmbedError> {
    let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    let has_output = session.outputs().iter().any(|o| o.name() == OUTPUT);
    if inputs != ["input_ids", "attention_mask"] || !has_output {
        return Err(EmbedError::UnexpectedModel {
            path: path.to_path_buf(),
            message: format!(
                "inputs {inputs:?} (want [\"input_ids\", \"attention_mask\"]), \
                 output {OUTPUT} {}",
                if has_output { "present" } else { "missing" }
            ),
        });
    }
    Ok(())
}

/// Tests against the converted model. They need `scripts/stack.sh model` to have run
/// (scripts/test.sh runs `scripts/stack.sh up`, which does) and fail, never skip,
/// when the files are not there.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::OnceLock;

    use serde::Deserialize;

    use super::*;
    use crate::cosine;

    /// One line of the converter's reference.json.
    #[derive(Deserialize)]
    struct Reference {
        text: String,
        ids: Vec<i64>,
        embedding: Vec<f64>,
    }

    /// `EmbedderConfig::from_env()` for `variant`, after checking that the model is
    /// there.
    fn config(variant: ModelVariant) -> EmbedderConfig {
        let config = EmbedderConfig::from_env().unwrap();
        let dir = &config.model_dir;
        assert!(
            dir.join(variant.file_name()).is_file() && dir.join("reference.json").is_file(),
            "the converted model is not in {}: run `scripts/stack.sh model` \
             (and export the PALISADE_MODEL_DIR and ORT_DYLIB_PATH it prints)",
            dir.display()
        );
        EmbedderConfig { variant, ..config }
    }

    fn embedder(variant: ModelVariant) -> &'static Embedder {
        static FP32: OnceLock<Embedder> = OnceLock::new();
        static INT8: OnceLock<Embedder> = OnceLock::new();
        let cell = match variant {
            ModelVariant::Fp32 => &FP32,
            ModelVariant::Int8 => &INT8,
        };
        cell.get_or_init(|| Embedder::load(&config(variant)).unwrap())
    }

    fn references() -> Vec<Reference> {
        let path = config(ModelVariant::Int8).model_dir.join("reference.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn cosine_to_reference(a: &[f32], reference: &[f64]) -> f64 {
        let dot: f64 = a
            .iter()
            .zip(reference)
            .map(|(x, y)| f64::from(*x) * y)
            .sum();
        let norm_a = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let norm_r = reference.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (norm_a * norm_r)
    }

    fn texts(references: &[Reference]) -> Vec<&str> {
        references.iter().map(|r| r.text.as_str()).collect()
    }

    #[test]
    fn rust_tokenisation_equals_the_converters() {
        let references = references();
        let encoded = embedder(ModelVariant::Int8)
            .tokenize(&texts(&references))
            .unwrap();
        for (reference, ids) in references.iter().zip(encoded.ids()) {
            assert_eq!(ids, &reference.ids, "{:?}", reference.text);
        }
        assert!(
            encoded.ids().iter().any(|ids| ids.len() == MAX_TOKENS),
            "the 400-word text is cut at {MAX_TOKENS} tokens"
        );
    }

    #[test]
    fn fp32_equals_the_reference_forward_pass() {
        let references = references();
        let vectors = embedder(ModelVariant::Fp32)
            .embed_batch(&texts(&references))
            .unwrap();
        for (reference, vector) in references.iter().zip(&vectors) {
            assert_eq!(vector.len(), DIMENSIONS);
            let cos = cosine_to_reference(vector, &reference.embedding);
            assert!(cos >= 0.9999, "{cos} for {:?}", reference.text);
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        }
    }

    #[test]
    fn int8_stays_close_to_the_reference() {
        let references = references();
        let vectors = embedder(ModelVariant::Int8)
            .embed_batch(&texts(&references))
            .unwrap();
        let cosines: Vec<f64> = references
            .iter()
            .zip(&vectors)
            .map(|(r, v)| cosine_to_reference(v, &r.embedding))
            .collect();
        eprintln!("int8 vs reference: {cosines:.4?}");
        for (reference, cos) in references.iter().zip(&cosines) {
            // The empty text ([CLS] [SEP] only) is the hardest case for int8 (≈0.968).
            let floor = if reference.text.is_empty() {
                0.95
            } else {
                0.97
            };
            assert!(*cos >= floor, "{cos} for {:?}", reference.text);
        }
        let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
        assert!(mean >= 0.99, "mean cosine {mean}");
    }

    #[test]
    fn a_batch_of_mixed_lengths_equals_one_by_one() {
        let references = references();
        let mut texts = texts(&references);
        texts.extend([
            "kernel: eth0 link up",
            "sshd: Accepted publickey for deploy from 10.0.0.9 port 51514 ssh2",
            "x",
        ]);
        for variant in [ModelVariant::Fp32, ModelVariant::Int8] {
            // Runs of 4: the sorted batch is cut into several runs, each padded.
            let small_runs = Embedder::load(&EmbedderConfig {
                sub_batch: 4,
                ..config(variant)
            })
            .unwrap();
            let batch = small_runs.embed_batch(&texts).unwrap();
            let (floor, mean_floor) = match variant {
                ModelVariant::Fp32 => (0.9999, 0.9999),
                // int8 quantises activations with one scale per run (onnxruntime's
                // dynamic quantisation), so the other texts and the padding of a run
                // move a vector about as far as int8 is from fp32 (measured: mean
                // 0.99, min 0.968 for the empty text).
                ModelVariant::Int8 => (0.95, 0.98),
            };
            let mut cosines = Vec::new();
            for (text, vector) in texts.iter().zip(&batch) {
                let alone = small_runs.embed(text).unwrap();
                cosines.push(cosine(vector, &alone));
            }
            eprintln!("{variant} batch vs alone: {cosines:.5?}");
            for (text, cos) in texts.iter().zip(&cosines) {
                assert!(*cos >= floor, "{variant}: {cos} for {text:?}");
            }
            let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
            assert!(mean >= mean_floor, "{variant}: mean {mean}");
        }
    }

    #[test]
    fn empty_text_and_empty_batch() {
        let embedder = embedder(ModelVariant::Int8);
        let vector = embedder.embed("").unwrap();
        assert_eq!(vector.len(), DIMENSIONS);
        assert!(vector.iter().all(|x| x.is_finite()));
        assert!(embedder.embed_batch(&[]).unwrap().is_empty());
        assert!(embedder.tokenize(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_command_variant_is_nearer_than_an_unrelated_line() {
        for variant in [ModelVariant::Fp32, ModelVariant::Int8] {
            let v = embedder(variant)
                .embed_batch(&[
                    "cat /etc/shadow",
                    "tail -n 10 /etc/shadow",
                    "kernel: eth0 link up",
                ])
                .unwrap();
            let (variant_cos, unrelated_cos) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
            assert!(
                variant_cos > unrelated_cos,
                "{variant}: variant {variant_cos} vs unrelated {unrelated_cos}"
            );
        }
    }

    #[test]
    fn model_id_names_model_and_variant() {
        assert_eq!(
            embedder(ModelVariant::Int8).model_id(),
            "all-MiniLM-L6-v2:int8"
        );
        assert_eq!(
            embedder(ModelVariant::Fp32).model_id(),
            "all-MiniLM-L6-v2:fp32"
        );
        assert_eq!(embedder(ModelVariant::Int8).execution_provider(), "cpu");
    }

    #[test]
    fn threads_share_one_embedder() {
        let embedder = embedder(ModelVariant::Int8).clone();
        let alone = embedder.embed("Failed password for root").unwrap();
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let embedder = embedder.clone();
                std::thread::spawn(move || embedder.embed("Failed password for root").unwrap())
            })
            .collect();
        for handle in handles {
            assert!(cosine(&handle.join().unwrap(), &alone) > 0.9999);
        }
    }

    #[test]
    fn a_missing_model_says_how_to_get_it() {
        let err = Embedder::load(&EmbedderConfig {
            model_dir: "/nonexistent/palisade-model".into(),
            ..EmbedderConfig::default()
        })
        .unwrap_err();
        assert!(matches!(err, EmbedError::ModelMissing { .. }));
        assert!(
            err.to_string().contains("run `scripts/stack.sh model`"),
            "{err}"
        );
    }
}
