//! Engine layer: loads the model with mistral.rs and turns requests into response streams.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use mistralrs::{
    IsqType, LoraModelBuilder, Model, ModelDType, NormalRequest, Request, RequestLike,
    RequestMessage, Response, SamplingParams, TextMessageRole, TextMessages, TextModelBuilder,
    TokenSource,
};
use tokio::sync::mpsc;

use crate::adapters::{self, Adapter};
use crate::error::ApiError;

/// Capacity of the per-request channel the engine writes into. The forwarding task drains it at
/// once into an unbounded queue, so one slow client never blocks the engine's loop.
const ENGINE_CHANNEL_CAPACITY: usize = 16;

/// Weight data type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DType {
    /// Take it from the model's config (bf16 falls back to f32 on CPU, where candle lacks bf16
    /// matmul).
    Auto,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
    /// float32.
    F32,
}

/// How to load the model.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Local directory in Hugging Face layout, or holding the GGUF file.
    pub model_dir: PathBuf,
    /// The GGUF file in `model_dir` to serve; `None`: the one `.gguf` file there, if the
    /// directory holds no safetensors weights.
    pub gguf_file: Option<String>,
    /// Context limit the server enforces (prompt plus new tokens), below the model's own.
    pub max_model_len: Option<usize>,
    /// Weight data type.
    pub dtype: DType,
    /// In-situ quantization, e.g. `Q4K` or `Q8_0`.
    pub isq: Option<IsqType>,
    /// Sequences the engine runs at once.
    pub max_running: usize,
    /// Run on the CPU even when a GPU is available.
    pub force_cpu: bool,
    /// Adapters to merge, with their strengths.
    pub adapters: Vec<Adapter>,
    /// HF hub cache directory where adapters are staged (mistral.rs reads adapters from there).
    pub adapter_cache_dir: Option<PathBuf>,
}

/// Errors while loading the model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The model directory does not exist or lacks a required file.
    #[error("model directory {dir}: {reason}")]
    ModelDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Staging an adapter failed.
    #[error(transparent)]
    Adapter(#[from] adapters::AdapterError),
    /// mistral.rs failed to build the model.
    #[error("loading the model failed: {0:#}")]
    Engine(anyhow::Error),
    /// The settings do not fit the model (e.g. adapters on a GGUF file).
    #[error("{0}")]
    Unsupported(String),
    /// The weights could not be downloaded.
    #[error("downloading the weights failed: {0}")]
    Download(#[from] crate::download::DownloadError),
}

impl LoadError {
    /// The reason written to the termination log, which the controller turns into a condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Download(e) => e.reason(),
            _ => "ModelLoadFailed",
        }
    }
}

/// What the model directory holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Weights {
    /// Hugging Face layout with safetensors weights.
    Safetensors,
    /// One GGUF file (tokenizer and chat template from its metadata).
    Gguf(String),
}

/// Checks that `dir` is a local model directory and says which weights it holds. mistral.rs
/// 0.8.1 treats a path that does not exist as a Hugging Face hub id and would go to the network.
pub fn check_model_dir(dir: &Path, gguf_file: Option<&str>) -> Result<Weights, LoadError> {
    let fail = |reason: &str| LoadError::ModelDir {
        dir: dir.to_path_buf(),
        reason: reason.to_string(),
    };
    if !dir.is_dir() {
        return Err(fail("does not exist or is not a directory"));
    }
    if let Some(file) = gguf_file {
        return if dir.join(file).is_file() {
            Ok(Weights::Gguf(file.to_string()))
        } else {
            Err(fail(&format!("has no GGUF file {file}")))
        };
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| fail(&e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let has_safetensors = names.iter().any(|n| n.ends_with(".safetensors"));
    let ggufs: Vec<&String> = names.iter().filter(|n| n.ends_with(".gguf")).collect();
    if !has_safetensors {
        return match ggufs.as_slice() {
            [one] => Ok(Weights::Gguf((*one).clone())),
            [] => Err(fail("has no *.safetensors weights and no .gguf file")),
            _ => Err(fail(
                "holds several .gguf files; name the one to serve with --model-file",
            )),
        };
    }
    for file in ["config.json", "tokenizer.json"] {
        if !dir.join(file).is_file() {
            return Err(fail(&format!("has no {file}")));
        }
    }
    Ok(Weights::Safetensors)
}

/// One chat message.
#[derive(Clone, Debug)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool` or another role.
    pub role: String,
    /// Text content.
    pub content: String,
}

/// What to generate from.
#[derive(Clone, Debug)]
pub enum Input {
    /// Chat messages, formatted with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text continued as is.
    Text(String),
}

fn text_messages(messages: &[ChatMessage]) -> TextMessages {
    messages.iter().fold(TextMessages::new(), |acc, m| {
        let role = match m.role.as_str() {
            "system" => TextMessageRole::System,
            "user" => TextMessageRole::User,
            "assistant" => TextMessageRole::Assistant,
            "tool" => TextMessageRole::Tool,
            other => TextMessageRole::Custom(other.to_string()),
        };
        acc.add_message(role, &m.content)
    })
}

fn model_dtype(dtype: DType) -> ModelDType {
    match dtype {
        DType::Auto => ModelDType::Auto,
        DType::Bf16 => ModelDType::BF16,
        DType::F16 => ModelDType::F16,
        DType::F32 => ModelDType::F32,
    }
}

/// The loaded model.
pub struct Engine {
    model: Model,
    max_seq_len: Option<usize>,
}

impl Engine {
    /// Loads the model (and merges adapters). Takes from milliseconds to minutes.
    pub async fn load(config: &EngineConfig) -> Result<Self, LoadError> {
        let weights = check_model_dir(&config.model_dir, config.gguf_file.as_deref())?;
        let model_dir =
            std::fs::canonicalize(&config.model_dir).map_err(|e| LoadError::ModelDir {
                dir: config.model_dir.clone(),
                reason: e.to_string(),
            })?;
        let model = if let Weights::Gguf(file) = weights {
            Self::load_gguf(config, &model_dir, &file).await?
        } else {
            Self::load_safetensors(config, &model_dir).await?
        };
        let model_len = model.max_sequence_length().ok().flatten();
        let max_seq_len = match (model_len, config.max_model_len) {
            (Some(m), Some(limit)) => Some(m.min(limit)),
            (m, limit) => m.or(limit),
        };
        Ok(Self { model, max_seq_len })
    }

    async fn load_gguf(config: &EngineConfig, dir: &Path, file: &str) -> Result<Model, LoadError> {
        if !config.adapters.is_empty() {
            return Err(LoadError::Unsupported(format!(
                "{file} is a GGUF model; adapters need a safetensors model (found {} adapter(s) \
                 in the adapters directory)",
                config.adapters.len()
            )));
        }
        if config.isq.is_some() {
            return Err(LoadError::Unsupported(format!(
                "{file} is a GGUF model, already quantized; drop --isq / ISQ"
            )));
        }
        // mistral.rs's GgufModelBuilder always picks the activation dtype itself, and on a
        // CPU it picks f16 (x86 has no f16 arithmetic; llama.cpp computes in f32 there). So the
        // pipeline is built here as the builder would, with the dtype chosen: f32 on a CPU,
        // else the --dtype given.
        use mistralrs::core::{
            AddModelConfig, AutoDeviceMapParams, DefaultSchedulerMethod, DeviceMapSetting,
            EngineConfig, GGUFLoaderBuilder, GGUFSpecificConfig, SchedulerConfig,
        };
        let device =
            mistralrs::best_device(config.force_cpu).map_err(|e| LoadError::Engine(e.into()))?;
        let dtype = if device.is_cpu() {
            ModelDType::F32
        } else {
            model_dtype(config.dtype)
        };
        tracing::info!(file, dir = %dir.display(), %dtype,
            "loading GGUF (tokenizer and chat template from its metadata)");
        let loader = GGUFLoaderBuilder::new(
            None,
            None,
            dir.to_string_lossy().into_owned(),
            vec![file.to_string()],
            GGUFSpecificConfig { topology: None },
            false,
            None,
        )
        .build();
        let pipeline = loader
            .load_model_from_hf(
                None,
                TokenSource::None,
                &dtype,
                &device,
                true,
                DeviceMapSetting::Auto(AutoDeviceMapParams::default_text()),
                None,
                None,
            )
            .map_err(LoadError::Engine)?;
        let scheduler = SchedulerConfig::DefaultScheduler {
            method: DefaultSchedulerMethod::Fixed(
                std::num::NonZeroUsize::new(config.max_running)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            ),
        };
        let add = AddModelConfig {
            engine_config: EngineConfig {
                throughput_logging_enabled: false,
                ..EngineConfig::default()
            },
            mcp_client_config: None,
            loader_config: None,
        };
        Ok(
            mistralrs::model_builder_trait::build_model_from_pipeline(pipeline, scheduler, add)
                .await,
        )
    }

    async fn load_safetensors(config: &EngineConfig, model_dir: &Path) -> Result<Model, LoadError> {
        let mut builder = TextModelBuilder::new(model_dir.to_string_lossy())
            .with_dtype(model_dtype(config.dtype))
            .with_max_num_seqs(config.max_running.max(1))
            .with_token_source(TokenSource::None);
        if let Some(isq) = config.isq {
            builder = builder.with_isq(isq);
        }
        if config.force_cpu {
            builder = builder.with_force_cpu();
        }
        if config.adapters.is_empty() {
            builder.build().await
        } else {
            let cache_dir = config
                .adapter_cache_dir
                .clone()
                .or_else(mistralrs::core::hf_hub_cache_dir)
                .ok_or_else(|| LoadError::ModelDir {
                    dir: model_dir.to_path_buf(),
                    reason: "no HF hub cache directory to stage adapters in (set HF_HUB_CACHE)"
                        .into(),
                })?;
            let mut ids = Vec::new();
            for adapter in &config.adapters {
                let id = adapters::stage(adapter, &cache_dir)?;
                tracing::info!(adapter = %adapter.name, strength = adapter.strength, id = %id,
                    cache = %cache_dir.display(), "staged adapter");
                ids.push(id);
            }
            LoraModelBuilder::from_text_model_builder(builder, ids)
                .build()
                .await
        }
        .map_err(LoadError::Engine)
    }

    /// The model's maximum context length, if known.
    pub fn max_seq_len(&self) -> Option<usize> {
        self.max_seq_len
    }

    /// Counts the prompt tokens of `input` as the engine will see them.
    ///
    /// The tokenizer runs on mistral.rs's engine thread, which panics (taking every running
    /// generation with it) when the reply channel is gone — as it is when a client hangs up and
    /// its handler is dropped mid-await. So the request is made from a task of its own, which
    /// keeps the channel open until the engine answers, whatever happens to the caller.
    pub async fn count_prompt_tokens(self: &Arc<Self>, input: &Input) -> Result<usize, ApiError> {
        let text = match input {
            Input::Chat(messages) => either::Either::Left(text_messages(messages)),
            Input::Text(text) => either::Either::Right(text.clone()),
        };
        let add_generation_prompt = matches!(input, Input::Chat(_));
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            engine
                .model
                .tokenize(text, None, true, add_generation_prompt, None)
                .await
        })
        .await
        .map_err(|e| ApiError::Engine(format!("tokenizing the prompt: {e}")))?
        .map(|t| t.len())
        .map_err(|e| ApiError::BadRequest(format!("cannot tokenize the prompt: {e}")))
    }

    /// Sends a generation request to the engine. Responses arrive on the returned receiver; the
    /// engine's own channel is drained promptly by a forwarding task. Dropping the receiver
    /// cancels the sequence.
    pub async fn generate(
        &self,
        input: Input,
        sampling: SamplingParams,
        stream: bool,
    ) -> Result<mpsc::UnboundedReceiver<Response>, ApiError> {
        let messages = match input {
            Input::Chat(messages) => text_messages(&messages).take_messages(),
            Input::Text(text) => RequestMessage::Completion {
                text,
                echo_prompt: false,
                best_of: None,
            },
        };
        let (tx, mut engine_rx) = mpsc::channel(ENGINE_CHANNEL_CAPACITY);
        let request = Request::Normal(Box::new(NormalRequest {
            messages,
            sampling_params: sampling,
            response: tx,
            return_logprobs: false,
            is_streaming: stream,
            id: 0,
            constraint: mistralrs::Constraint::None,
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: None,
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }));
        let sender = self
            .model
            .inner()
            .get_sender(None)
            .map_err(|e| ApiError::Engine(e.to_string()))?;
        sender
            .send(request)
            .await
            .map_err(|_| ApiError::Engine("the engine stopped".into()))?;
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(response) = engine_rx.recv().await {
                if out_tx.send(response).is_err() {
                    break; // client went away: dropping engine_rx cancels the sequence
                }
            }
        });
        Ok(out_rx)
    }
}

/// Marks the time of the first and subsequent tokens of one request for the latency metrics.
#[derive(Debug)]
pub struct TokenClock {
    start: Instant,
    last: Option<Instant>,
}

impl TokenClock {
    /// Starts the clock at admission.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
            last: None,
        }
    }

    /// Records a token-bearing event; returns (time to first token, or inter-token gap).
    pub fn tick(&mut self) -> TokenTiming {
        let now = Instant::now();
        let timing = match self.last {
            None => TokenTiming::First(now - self.start),
            Some(last) => TokenTiming::Next(now - last),
        };
        self.last = Some(now);
        timing
    }

    /// Time since admission.
    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }
}

/// A timing observation from [`TokenClock::tick`].
#[derive(Debug, Clone, Copy)]
pub enum TokenTiming {
    /// Time to the first token.
    First(std::time::Duration),
    /// Gap since the previous token.
    Next(std::time::Duration),
}
