//! Where the model is and how to run it: [`EmbedderConfig`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{EmbedError, MODEL_NAME};

/// Which of the two converted ONNX files to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelVariant {
    /// `model.onnx`: the float32 graph, equal to the reference forward pass (cosine
    /// ≥ 0.9999) and independent of batching; about 1.3 to 1.5 times slower than
    /// int8 on a 2-core CPU.
    Fp32,
    /// `model-int8.onnx`: weights quantised per channel to int8, activations
    /// quantised per run (mean cosine ≈ 0.99 against fp32; a vector also moves by
    /// about that much with the other texts of its batch); the default.
    #[default]
    Int8,
}

impl ModelVariant {
    /// Lowercase name, as in `PALISADE_EMBED_VARIANT` and in [`crate::Embedder::model_id`].
    pub fn as_str(self) -> &'static str {
        match self {
            ModelVariant::Fp32 => "fp32",
            ModelVariant::Int8 => "int8",
        }
    }

    /// The ONNX file of this variant inside the model folder.
    pub fn file_name(self) -> &'static str {
        match self {
            ModelVariant::Fp32 => "model.onnx",
            ModelVariant::Int8 => "model-int8.onnx",
        }
    }

    /// Parses `fp32` or `int8` (any case).
    pub fn parse(name: &str) -> Option<ModelVariant> {
        match name.trim().to_ascii_lowercase().as_str() {
            "fp32" => Some(ModelVariant::Fp32),
            "int8" => Some(ModelVariant::Int8),
            _ => None,
        }
    }
}

impl std::fmt::Display for ModelVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to load the embedder. [`EmbedderConfig::default`] and [`EmbedderConfig::from_env`]
/// find the model where `scripts/stack.sh model` puts it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// Folder holding `model.onnx`, `model-int8.onnx` and `tokenizer.json` (the
    /// output of `scripts/model/minilm_to_onnx.py`). Default: [`default_model_dir`].
    pub model_dir: PathBuf,
    /// Which ONNX file to run. Default: int8.
    pub variant: ModelVariant,
    /// ONNX Runtime intra-op threads for one inference. Default: 2.
    pub threads: usize,
    /// Texts per inference run; a batch is sorted by token length and cut into runs of
    /// this many, each padded only to its own longest text. Default: 16 (on 2 cores
    /// runs of 16 were as fast as or faster than 32 in every configuration measured,
    /// and larger runs slower: padding and arena growth).
    pub sub_batch: usize,
    /// The `libonnxruntime.so` to load. Default: [`default_ort_dylib`]; when none,
    /// `libonnxruntime.so` from the loader's search path. ONNX Runtime is loaded once per
    /// process, by the first embedder.
    pub ort_dylib: Option<PathBuf>,
    /// Try ONNX Runtime's CUDA execution provider first; when it cannot be registered
    /// (a CPU-only runtime, no GPU) the embedder warns and runs on the CPU. Default: off.
    ///
    /// On a GPU run the fp32 variant in runs of 256: measured on an H200 with
    /// onnxruntime-gpu 1.31, that embeds ~28,000 texts/s, runs of 32 ~15,700, and int8
    /// ~660 (its quantised layers run on the CPU).
    pub cuda: bool,
    /// Let ONNX Runtime's intra-op threads spin while a run goes on, instead of
    /// sleeping between its parallel steps; they stop spinning when the run returns
    /// (`session.force_spinning_stop`), so an idle embedder takes no core from the
    /// rest of the box. Off: they sleep between steps too, each step waiting on a
    /// wake-up. Default: on (int8, batches of 256 on 2 cores: 636–658 texts/s on,
    /// 548–555 off).
    pub spin: bool,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig {
            model_dir: default_model_dir(),
            variant: ModelVariant::default(),
            threads: 2,
            sub_batch: 16,
            ort_dylib: default_ort_dylib(),
            cuda: false,
            spin: true,
        }
    }
}

impl EmbedderConfig {
    /// The defaults, overridden by these environment variables when set and not empty:
    ///
    /// | variable | field | values |
    /// |---|---|---|
    /// | `PALISADE_MODEL_DIR` | `model_dir` | a folder |
    /// | `ORT_DYLIB_PATH` | `ort_dylib` | a file |
    /// | `PALISADE_EMBED_VARIANT` | `variant` | `fp32`, `int8` |
    /// | `PALISADE_EMBED_THREADS` | `threads` | 1 or more |
    /// | `PALISADE_EMBED_SUB_BATCH` | `sub_batch` | 1 or more |
    /// | `PALISADE_EMBED_CUDA` | `cuda` | `1`/`true`/`yes`/`on`, `0`/`false`/`no`/`off` |
    /// | `PALISADE_EMBED_SPIN` | `spin` | the same |
    pub fn from_env() -> Result<EmbedderConfig, EmbedError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`EmbedderConfig::from_env`] over any variable lookup (tests use a map).
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<EmbedderConfig, EmbedError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let mut config = EmbedderConfig::default();
        if let Some(dir) = var("PALISADE_MODEL_DIR") {
            config.model_dir = PathBuf::from(dir);
        }
        if let Some(path) = var("ORT_DYLIB_PATH") {
            config.ort_dylib = Some(PathBuf::from(path));
        }
        if let Some(value) = var("PALISADE_EMBED_VARIANT") {
            config.variant = ModelVariant::parse(&value).ok_or(EmbedError::Config {
                var: "PALISADE_EMBED_VARIANT",
                value,
                expected: "fp32 or int8",
            })?;
        }
        if let Some(value) = var("PALISADE_EMBED_THREADS") {
            config.threads = positive("PALISADE_EMBED_THREADS", value)?;
        }
        if let Some(value) = var("PALISADE_EMBED_SUB_BATCH") {
            config.sub_batch = positive("PALISADE_EMBED_SUB_BATCH", value)?;
        }
        if let Some(value) = var("PALISADE_EMBED_CUDA") {
            config.cuda = switch("PALISADE_EMBED_CUDA", value)?;
        }
        if let Some(value) = var("PALISADE_EMBED_SPIN") {
            config.spin = switch("PALISADE_EMBED_SPIN", value)?;
        }
        Ok(config)
    }
}

/// An on/off switch.
fn switch(var: &'static str, value: String) -> Result<bool, EmbedError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(EmbedError::Config {
            var,
            value,
            expected: "1, true, yes, on, 0, false, no or off",
        }),
    }
}

/// A count of at least one.
fn positive(var: &'static str, value: String) -> Result<usize, EmbedError> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(EmbedError::Config {
            var,
            value,
            expected: "a whole number of at least 1",
        }),
    }
}

/// Palisade's home, as `scripts/stack.sh` chooses it: `PALISADE_HOME`, else
/// `/var/lib/palisade` for root, else `${XDG_DATA_HOME:-~/.local/share}/palisade`.
pub fn palisade_home() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(home) = var("PALISADE_HOME") {
        return PathBuf::from(home);
    }
    if is_root() {
        return PathBuf::from("/var/lib/palisade");
    }
    let data = var("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from(".local/share"));
    data.join("palisade")
}

/// Where `scripts/stack.sh model` puts the converted model:
/// `<palisade_home>/models/all-MiniLM-L6-v2` (`PALISADE_MODEL_DIR` overrides it in
/// [`EmbedderConfig::from_env`]).
pub fn default_model_dir() -> PathBuf {
    palisade_home().join("models").join(MODEL_NAME)
}

/// The `libonnxruntime.so.<version>` inside the model venv of `scripts/stack.sh`
/// (`<palisade_home>/opt/model-venv/lib/python*/site-packages/onnxruntime/capi/`), if
/// it is there (`ORT_DYLIB_PATH` overrides it in [`EmbedderConfig::from_env`]).
pub fn default_ort_dylib() -> Option<PathBuf> {
    let lib = palisade_home().join("opt/model-venv/lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/onnxruntime/capi"))
        .filter_map(|capi| std::fs::read_dir(capi).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Whether this process runs as root (effective uid 0, from `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<EmbedderConfig, EmbedError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EmbedderConfig::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_are_int8_two_threads_runs_of_16_on_the_cpu() {
        let config = from(&[]).unwrap();
        assert_eq!(config.variant, ModelVariant::Int8);
        assert_eq!(
            (config.threads, config.sub_batch, config.cuda, config.spin),
            (2, 16, false, true)
        );
        assert!(config.model_dir.ends_with("models/all-MiniLM-L6-v2"));
    }

    #[test]
    fn variables_override_the_defaults() {
        let config = from(&[
            ("PALISADE_MODEL_DIR", "/m"),
            ("ORT_DYLIB_PATH", "/lib/libonnxruntime.so.1.32.0"),
            ("PALISADE_EMBED_VARIANT", "FP32"),
            ("PALISADE_EMBED_THREADS", "4"),
            ("PALISADE_EMBED_SUB_BATCH", "16"),
            ("PALISADE_EMBED_CUDA", "yes"),
            ("PALISADE_EMBED_SPIN", "off"),
        ])
        .unwrap();
        assert_eq!(
            config,
            EmbedderConfig {
                model_dir: "/m".into(),
                variant: ModelVariant::Fp32,
                threads: 4,
                sub_batch: 16,
                ort_dylib: Some("/lib/libonnxruntime.so.1.32.0".into()),
                cuda: true,
                spin: false,
            }
        );
        let empty_means_unset = from(&[("PALISADE_EMBED_VARIANT", " ")]).unwrap();
        assert_eq!(empty_means_unset.variant, ModelVariant::Int8);
    }

    #[test]
    fn bad_values_name_the_variable_and_what_it_takes() {
        let err = from(&[("PALISADE_EMBED_VARIANT", "fp16")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PALISADE_EMBED_VARIANT=\"fp16\" is not valid: expected fp32 or int8"
        );
        for (var, value) in [
            ("PALISADE_EMBED_THREADS", "0"),
            ("PALISADE_EMBED_SUB_BATCH", "many"),
            ("PALISADE_EMBED_CUDA", "maybe"),
            ("PALISADE_EMBED_SPIN", "fast"),
        ] {
            let err = from(&[(var, value)]).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{var}=")), "{err}");
        }
    }

    #[test]
    fn config_deserialises_with_defaults_and_refuses_unknown_fields() {
        let config: EmbedderConfig =
            serde_json::from_str(r#"{"variant": "fp32", "threads": 1}"#).unwrap();
        assert_eq!(config.variant, ModelVariant::Fp32);
        assert_eq!((config.threads, config.sub_batch), (1, 16));
        assert!(serde_json::from_str::<EmbedderConfig>(r#"{"thread": 1}"#).is_err());
    }
}
