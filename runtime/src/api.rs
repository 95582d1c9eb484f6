//! Request types of the HTTP API and their pure mapping onto engine inputs and sampling.
//!
//! Nothing here does I/O, so the mapping is unit-tested table by table.

use mistralrs::{SamplingParams, StopTokens};
use serde::Deserialize;

use crate::engine::{ChatMessage, Input};
use crate::error::ApiError;

/// A chat message as clients send it: `content` is a string or a list of `{"type": "text"}` parts.
#[derive(Clone, Debug, Deserialize)]
pub struct MessageIn {
    /// The role.
    pub role: String,
    /// The content.
    #[serde(default)]
    pub content: Option<Content>,
}

/// Message content: plain text or content parts.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts; only text parts are supported.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    /// Part type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

fn to_messages(messages: Vec<MessageIn>) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::BadRequest("`messages` must not be empty".into()));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        if p.kind != "text" {
                            return Err(ApiError::BadRequest(format!(
                                "messages[{i}]: content part type `{}` is not supported; only `text`",
                                p.kind
                            )));
                        }
                        text.push_str(p.text.as_deref().unwrap_or_default());
                    }
                    text
                }
            };
            if m.role.is_empty() {
                return Err(ApiError::BadRequest(format!(
                    "messages[{i}]: `role` must not be empty"
                )));
            }
            Ok(ChatMessage {
                role: m.role,
                content,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// KAITO `/chat`

/// `generate_kwargs` of KAITO's `/chat` (Hugging Face `generate` names). Unknown keys are ignored.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct GenerateKwargs {
    /// Total length (prompt + new tokens), Hugging Face semantics.
    pub max_length: usize,
    /// New tokens; takes precedence over `max_length` when set.
    pub max_new_tokens: Option<usize>,
    /// Accepted for compatibility; not applied (mistral.rs 0.8.1 has no minimum length).
    pub min_length: usize,
    /// `false` means greedy decoding.
    pub do_sample: bool,
    /// Sampling temperature.
    pub temperature: f64,
    /// Top-k (0 disables).
    pub top_k: usize,
    /// Nucleus sampling.
    pub top_p: f64,
    /// Accepted for compatibility; not applied (mistral.rs 0.8.1 has no typical sampling).
    pub typical_p: f64,
    /// Repetition penalty (1.0 disables).
    pub repetition_penalty: f32,
}

impl Default for GenerateKwargs {
    fn default() -> Self {
        Self {
            max_length: 200,
            max_new_tokens: None,
            min_length: 0,
            do_sample: true,
            temperature: 1.0,
            top_k: 10,
            top_p: 1.0,
            typical_p: 1.0,
            repetition_penalty: 1.0,
        }
    }
}

/// Body of KAITO's `POST /chat`.
#[derive(Clone, Debug, Deserialize)]
pub struct KaitoChatRequest {
    /// Text to continue.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Chat messages (instead of `prompt`).
    #[serde(default)]
    pub messages: Option<Vec<MessageIn>>,
    /// Whether `Result` starts with the prompt (prompt requests only).
    #[serde(default = "default_true")]
    pub return_full_text: bool,
    /// Accepted for compatibility; the byte-level decoder does no clean-up either way.
    #[serde(default)]
    pub clean_up_tokenization_spaces: bool,
    /// Generation parameters.
    #[serde(default)]
    pub generate_kwargs: GenerateKwargs,
}

fn default_true() -> bool {
    true
}

/// A validated `/chat` request.
#[derive(Clone, Debug)]
pub struct KaitoPlan {
    /// Engine input.
    pub input: Input,
    /// Sampling parameters without `max_len` (set once the prompt length is known).
    pub sampling: SamplingParams,
    /// Prefix of `Result`: the prompt when `return_full_text` is set.
    pub prefix: String,
}

fn check_range(name: &str, value: f64, lo: f64, hi: f64) -> Result<(), ApiError> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "`{name}` must be between {lo} and {hi}, got {value}"
        )))
    }
}

/// Sampling from common knobs. `temperature == 0` or `do_sample == false` is greedy. Every field
/// is set explicitly: the SDK's `RequestBuilder` starts greedy (top_k = 1), and mistral.rs 0.8.1
/// turns a `temperature` of `None` into 1.0 (sampling!), so greedy is `temperature = 0, top_k = 1`.
pub fn sampling(
    do_sample: bool,
    temperature: Option<f64>,
    top_k: Option<usize>,
    top_p: Option<f64>,
    repetition_penalty: Option<f32>,
) -> Result<SamplingParams, ApiError> {
    let mut params = SamplingParams::neutral();
    if let Some(t) = temperature {
        check_range("temperature", t, 0.0, 100.0)?;
    }
    if let Some(p) = top_p {
        check_range("top_p", p, 0.0, 1.0)?;
    }
    if let Some(r) = repetition_penalty {
        check_range("repetition_penalty", f64::from(r), 0.0, 100.0)?;
        if (r - 1.0).abs() > f32::EPSILON && r > 0.0 {
            params.repetition_penalty = Some(r);
        }
    }
    let greedy = !do_sample || temperature.is_some_and(|t| t < 1e-7);
    if greedy {
        params.temperature = Some(0.0);
        params.top_k = Some(1);
        params.top_p = None;
    } else {
        params.temperature = Some(temperature.unwrap_or(1.0));
        params.top_k = top_k.filter(|k| *k > 0);
        params.top_p = top_p.filter(|p| *p < 1.0 && *p > 0.0);
    }
    Ok(params)
}

impl KaitoChatRequest {
    /// Validates the request and maps it onto the engine.
    pub fn plan(self) -> Result<KaitoPlan, ApiError> {
        let g = &self.generate_kwargs;
        let sampling = sampling(
            g.do_sample,
            Some(g.temperature),
            Some(g.top_k),
            Some(g.top_p),
            Some(g.repetition_penalty),
        )?;
        match (self.prompt, self.messages) {
            (Some(prompt), _) if !prompt.is_empty() => Ok(KaitoPlan {
                prefix: if self.return_full_text {
                    prompt.clone()
                } else {
                    String::new()
                },
                input: Input::Text(prompt),
                sampling,
            }),
            (_, Some(messages)) => Ok(KaitoPlan {
                input: Input::Chat(to_messages(messages)?),
                sampling,
                prefix: String::new(),
            }),
            (Some(_), None) => Err(ApiError::BadRequest(
                "`prompt` must be a non-empty string".into(),
            )),
            (None, None) => Err(ApiError::BadRequest(
                "missing `prompt`: send {\"prompt\": \"...\"} (or `messages`)".into(),
            )),
        }
    }

    /// New tokens to generate given the prompt length (HF `max_length` counts the prompt).
    pub fn max_new_tokens(g: &GenerateKwargs, prompt_tokens: usize) -> Result<usize, ApiError> {
        if let Some(n) = g.max_new_tokens {
            return if n == 0 {
                Err(ApiError::BadRequest(
                    "`max_new_tokens` must be positive".into(),
                ))
            } else {
                Ok(n)
            };
        }
        if g.max_length <= prompt_tokens {
            return Err(ApiError::BadRequest(format!(
                "`max_length` ({}) counts the prompt and must exceed its length ({prompt_tokens} \
                 tokens); raise it or set `max_new_tokens`",
                g.max_length
            )));
        }
        Ok(g.max_length - prompt_tokens)
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI

/// `stop`: a string or a list of strings.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

/// Most stop sequences a request may give (OpenAI's limit).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Longest stop sequence, in bytes: every generated token is checked against each.
pub const MAX_STOP_BYTES: usize = 256;

fn stop_tokens(stop: Option<Stop>) -> Result<Option<StopTokens>, ApiError> {
    let Some(stop) = stop else { return Ok(None) };
    let list = match stop {
        Stop::One(s) => vec![s],
        Stop::Many(v) => v,
    };
    if list.len() > MAX_STOP_SEQUENCES {
        return Err(ApiError::BadRequest(format!(
            "`stop` has {} sequences; at most {MAX_STOP_SEQUENCES} are allowed",
            list.len()
        )));
    }
    if let Some(long) = list.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::BadRequest(format!(
            "a `stop` sequence is {} bytes long; at most {MAX_STOP_BYTES} are allowed",
            long.len()
        )));
    }
    let list: Vec<String> = list.into_iter().filter(|s| !s.is_empty()).collect();
    Ok((!list.is_empty()).then_some(StopTokens::Seqs(list)))
}

/// `stream_options`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with token usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// Body of `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model name; must be the served name when set.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<MessageIn>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Maximum new tokens (legacy name).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Maximum new tokens.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    /// Sampling temperature (default 1; 0 is greedy).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Top-k (extension).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Repetition penalty (extension).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Frequency penalty.
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Presence penalty.
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Number of choices; only 1 is supported.
    #[serde(default)]
    pub n: Option<usize>,
}

/// Body of `POST /v1/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    /// Model name; must be the served name when set.
    #[serde(default)]
    pub model: Option<String>,
    /// The prompt: a string, or a list holding one string.
    pub prompt: PromptIn,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Maximum new tokens (OpenAI's default is 16).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature (default 1; 0 is greedy).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Top-k (extension).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Repetition penalty (extension).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Prepend the prompt to the text.
    #[serde(default)]
    pub echo: bool,
    /// Number of choices; only 1 is supported.
    #[serde(default)]
    pub n: Option<usize>,
}

/// A completion prompt.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptIn {
    /// One prompt.
    One(String),
    /// A batch of prompts; only one is supported.
    Many(Vec<String>),
}

/// A validated OpenAI request.
#[derive(Clone, Debug)]
pub struct OpenAiPlan {
    /// Engine input.
    pub input: Input,
    /// Sampling, with `max_len` when the client set one.
    pub sampling: SamplingParams,
    /// Stream as SSE.
    pub stream: bool,
    /// Send usage in a final streamed chunk.
    pub include_usage: bool,
    /// Prefix of the text (`echo`).
    pub prefix: String,
    /// The field the client set `sampling.max_len` with (`max_tokens` or
    /// `max_completion_tokens`); `None` when it is a default.
    pub max_tokens_field: Option<&'static str>,
}

/// Rejects a `model` other than the served one.
pub fn check_model(requested: Option<&str>, served: &str) -> Result<(), ApiError> {
    match requested {
        Some(m) if !m.is_empty() && m != served => Err(ApiError::ModelNotFound {
            requested: m.to_string(),
            served: served.to_string(),
        }),
        _ => Ok(()),
    }
}

fn check_n(n: Option<usize>) -> Result<(), ApiError> {
    match n {
        None | Some(1) => Ok(()),
        Some(n) => Err(ApiError::BadRequest(format!(
            "`n` = {n} is not supported; only 1"
        ))),
    }
}

fn check_max_tokens(max: Option<usize>) -> Result<Option<usize>, ApiError> {
    match max {
        Some(0) => Err(ApiError::BadRequest("`max_tokens` must be positive".into())),
        other => Ok(other),
    }
}

impl ChatCompletionRequest {
    /// Validates the request and maps it onto the engine.
    pub fn plan(self, served: &str) -> Result<OpenAiPlan, ApiError> {
        check_model(self.model.as_deref(), served)?;
        check_n(self.n)?;
        let mut sampling = sampling(
            true,
            Some(self.temperature.unwrap_or(1.0)),
            self.top_k,
            self.top_p,
            self.repetition_penalty,
        )?;
        sampling.frequency_penalty = self.frequency_penalty;
        sampling.presence_penalty = self.presence_penalty;
        sampling.stop_toks = stop_tokens(self.stop)?;
        let max_tokens_field = match (self.max_completion_tokens, self.max_tokens) {
            (Some(_), _) => Some("max_completion_tokens"),
            (None, Some(_)) => Some("max_tokens"),
            (None, None) => None,
        };
        sampling.max_len = check_max_tokens(self.max_completion_tokens.or(self.max_tokens))?;
        Ok(OpenAiPlan {
            input: Input::Chat(to_messages(self.messages)?),
            sampling,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            prefix: String::new(),
            max_tokens_field,
        })
    }
}

impl CompletionRequest {
    /// Validates the request and maps it onto the engine.
    pub fn plan(self, served: &str) -> Result<OpenAiPlan, ApiError> {
        check_model(self.model.as_deref(), served)?;
        check_n(self.n)?;
        let prompt = match self.prompt {
            PromptIn::One(p) => p,
            PromptIn::Many(mut v) if v.len() == 1 => v.remove(0),
            PromptIn::Many(v) => {
                return Err(ApiError::BadRequest(format!(
                    "`prompt` holds {} prompts; only one per request is supported",
                    v.len()
                )));
            }
        };
        if prompt.is_empty() {
            return Err(ApiError::BadRequest("`prompt` must not be empty".into()));
        }
        let mut sampling = sampling(
            true,
            Some(self.temperature.unwrap_or(1.0)),
            self.top_k,
            self.top_p,
            self.repetition_penalty,
        )?;
        sampling.stop_toks = stop_tokens(self.stop)?;
        let max_tokens_field = self.max_tokens.map(|_| "max_tokens");
        sampling.max_len = Some(check_max_tokens(self.max_tokens)?.unwrap_or(16));
        Ok(OpenAiPlan {
            prefix: if self.echo {
                prompt.clone()
            } else {
                String::new()
            },
            input: Input::Text(prompt),
            sampling,
            stream: self.stream,
            include_usage: false,
            max_tokens_field,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kaito(v: serde_json::Value) -> Result<KaitoPlan, ApiError> {
        serde_json::from_value::<KaitoChatRequest>(v)
            .unwrap()
            .plan()
    }

    #[test]
    fn kaito_defaults_sample_with_top_k_10() {
        let plan = kaito(json!({"prompt": "hi"})).unwrap();
        assert_eq!(plan.prefix, "hi");
        assert_eq!(plan.sampling.temperature, Some(1.0));
        assert_eq!(plan.sampling.top_k, Some(10));
        assert_eq!(plan.sampling.top_p, None);
        assert!(matches!(plan.input, Input::Text(ref t) if t == "hi"));
    }

    #[test]
    fn kaito_greedy_and_no_full_text() {
        let plan = kaito(json!({"prompt": "hi", "return_full_text": false,
            "generate_kwargs": {"do_sample": false, "repetition_penalty": 1.2, "foo": 1}}))
        .unwrap();
        assert_eq!(plan.prefix, "");
        assert_eq!(plan.sampling.temperature, Some(0.0));
        assert_eq!(plan.sampling.top_k, Some(1));
        assert_eq!(plan.sampling.repetition_penalty, Some(1.2));
    }

    #[test]
    fn kaito_messages_and_errors() {
        let plan = kaito(json!({"messages": [{"role": "user", "content": "x"}]})).unwrap();
        assert!(matches!(plan.input, Input::Chat(ref m) if m.len() == 1));
        let missing = kaito(json!({"generate_kwargs": {}})).unwrap_err();
        assert_eq!(missing.status(), 400);
        assert!(missing.to_string().contains("missing `prompt`"));
        assert!(kaito(json!({"prompt": ""})).is_err());
        assert!(kaito(json!({"prompt": "x", "generate_kwargs": {"top_p": 2.0}})).is_err());
        assert!(kaito(json!({"messages": []})).is_err());
    }

    #[test]
    fn kaito_max_length_counts_the_prompt() {
        let g = GenerateKwargs::default();
        assert_eq!(KaitoChatRequest::max_new_tokens(&g, 50).unwrap(), 150);
        assert!(KaitoChatRequest::max_new_tokens(&g, 200).is_err());
        let g = GenerateKwargs {
            max_new_tokens: Some(7),
            ..GenerateKwargs::default()
        };
        assert_eq!(KaitoChatRequest::max_new_tokens(&g, 500).unwrap(), 7);
    }

    #[test]
    fn openai_chat_mapping() {
        let req: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
            "temperature": 0, "max_tokens": 5, "stop": "x",
            "stream": true, "stream_options": {"include_usage": true}
        }))
        .unwrap();
        let plan = req.plan("m").unwrap();
        assert_eq!(plan.sampling.temperature, Some(0.0));
        assert_eq!(plan.sampling.top_k, Some(1));
        assert_eq!(plan.sampling.max_len, Some(5));
        assert!(plan.stream && plan.include_usage);
        assert!(matches!(plan.sampling.stop_toks, Some(StopTokens::Seqs(ref v)) if v == &["x"]));
        let many: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let err = stop_tokens(Some(Stop::Many(many))).expect_err("five");
        assert_eq!(
            err.to_string(),
            "`stop` has 5 sequences; at most 4 are allowed"
        );
        let err = stop_tokens(Some(Stop::One("x".repeat(257)))).expect_err("long");
        assert!(err.to_string().contains("257 bytes long"), "{err}");
        assert!(stop_tokens(Some(Stop::Many(vec!["a".repeat(256); 4]))).is_ok());

        let other: ChatCompletionRequest = serde_json::from_value(
            json!({"model": "other", "messages": [{"role": "user", "content": "a"}]}),
        )
        .unwrap();
        assert_eq!(other.plan("m").unwrap_err().status(), 404);
        let n2: ChatCompletionRequest =
            serde_json::from_value(json!({"messages": [{"role": "user", "content": "a"}], "n": 2}))
                .unwrap();
        assert_eq!(n2.plan("m").unwrap_err().status(), 400);
    }

    #[test]
    fn openai_completion_mapping() {
        let req: CompletionRequest =
            serde_json::from_value(json!({"prompt": ["p"], "echo": true})).unwrap();
        let plan = req.plan("m").unwrap();
        assert_eq!(plan.sampling.max_len, Some(16));
        assert_eq!(plan.prefix, "p");
        assert_eq!(plan.sampling.temperature, Some(1.0));
        let two: CompletionRequest = serde_json::from_value(json!({"prompt": ["a", "b"]})).unwrap();
        assert!(two.plan("m").is_err());
    }
}
