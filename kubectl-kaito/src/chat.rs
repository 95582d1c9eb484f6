//! `chat`: a session (history, sampling settings), the REPL's commands, request bodies and
//! the SSE parser are pure; [`Transport`] sends one HTTP/1.1 request either through a
//! port-forward to a serving pod (through the API server, no cluster DNS needed) or to a URL.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::{Value, json};

use crate::error::{Error, Result, chain};

/// Port the runtime serves on.
pub const RUNTIME_PORT: u16 = 5000;

/// A chat session: settings and the conversation so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Session {
    /// System prompt.
    pub system: Option<String>,
    /// (role, content), oldest first.
    pub history: Vec<(String, String)>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
}

/// What a REPL line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplCommand {
    /// `/help`.
    Help,
    /// `/quit` or `/exit`.
    Quit,
    /// `/clear`: forget the history.
    Clear,
    /// `/set KEY VALUE`.
    Set(String, String),
    /// `/system TEXT` (empty: remove it).
    System(String),
    /// An unknown `/command`.
    Unknown(String),
    /// Nothing typed.
    Empty,
    /// A message to the model.
    Message(String),
}

/// The REPL's help text.
pub const REPL_HELP: &str = "\
Commands:
  /help                     this text
  /quit                     leave (also Ctrl-D)
  /clear                    forget the conversation so far
  /set temperature 0.2      sampling temperature (0 = greedy)
  /set max_tokens 256       most tokens per reply
  /set top_p 0.9            nucleus sampling
  /system TEXT              set the system prompt (empty: remove it)
Anything else is sent to the model.";

/// Parses one REPL line.
pub fn parse_repl(line: &str) -> ReplCommand {
    let t = line.trim();
    if t.is_empty() {
        return ReplCommand::Empty;
    }
    let Some(cmd) = t.strip_prefix('/') else {
        return ReplCommand::Message(t.to_string());
    };
    let (word, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
    let rest = rest.trim();
    match word {
        "help" | "?" => ReplCommand::Help,
        "quit" | "exit" | "q" => ReplCommand::Quit,
        "clear" => ReplCommand::Clear,
        "system" => ReplCommand::System(rest.to_string()),
        "set" => {
            let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            ReplCommand::Set(k.to_string(), v.trim().to_string())
        }
        other => ReplCommand::Unknown(other.to_string()),
    }
}

impl Session {
    /// Applies `/set KEY VALUE`; returns what changed, or why not.
    pub fn set(&mut self, key: &str, value: &str) -> std::result::Result<String, String> {
        let bad = |what: &str| format!("invalid {key} {value:?}: {what}");
        match key.replace('-', "_").as_str() {
            "temperature" => {
                let v: f64 = value.parse().map_err(|_| bad("use a number, e.g. 0.2"))?;
                if !(0.0..=2.0).contains(&v) {
                    return Err(bad("use 0 to 2"));
                }
                self.temperature = Some(v);
                Ok(format!("temperature = {v}"))
            }
            "max_tokens" => {
                let v: u32 = value
                    .parse()
                    .map_err(|_| bad("use a whole number, e.g. 256"))?;
                self.max_tokens = Some(v);
                Ok(format!("max_tokens = {v}"))
            }
            "top_p" => {
                let v: f64 = value.parse().map_err(|_| bad("use a number, e.g. 0.9"))?;
                if !(0.0..=1.0).contains(&v) || v == 0.0 {
                    return Err(bad("use a number above 0 and at most 1"));
                }
                self.top_p = Some(v);
                Ok(format!("top_p = {v}"))
            }
            _ => Err(format!(
                "unknown setting {key:?}: use temperature, max_tokens or top_p"
            )),
        }
    }

    /// The messages for a request that adds `user`.
    pub fn messages(&self, user: &str) -> Vec<Value> {
        let mut m = Vec::new();
        if let Some(s) = &self.system {
            m.push(json!({"role": "system", "content": s}));
        }
        for (role, content) in &self.history {
            m.push(json!({"role": role, "content": content}));
        }
        m.push(json!({"role": "user", "content": user}));
        m
    }

    /// Body of a streamed `/v1/chat/completions` request.
    pub fn openai_body(&self, user: &str) -> Value {
        let mut b = json!({"messages": self.messages(user), "stream": true});
        if let Some(t) = self.temperature {
            b["temperature"] = json!(t);
        }
        if let Some(t) = self.max_tokens {
            b["max_tokens"] = json!(t);
        }
        if let Some(t) = self.top_p {
            b["top_p"] = json!(t);
        }
        b
    }

    /// Body of a KAITO `/chat` request.
    pub fn raw_body(&self, user: &str) -> Value {
        let mut kw = serde_json::Map::new();
        if let Some(t) = self.temperature {
            kw.insert("temperature".into(), json!(t));
            if t == 0.0 {
                kw.insert("do_sample".into(), json!(false));
            }
        }
        if let Some(t) = self.max_tokens {
            kw.insert("max_new_tokens".into(), json!(t));
        }
        if let Some(t) = self.top_p {
            kw.insert("top_p".into(), json!(t));
        }
        json!({"messages": self.messages(user), "return_full_text": false, "generate_kwargs": kw})
    }

    /// Records a finished exchange.
    pub fn record(&mut self, user: &str, reply: &str) {
        self.history.push(("user".into(), user.into()));
        self.history.push(("assistant".into(), reply.into()));
    }
}

/// What the SSE stream carried.
#[derive(Clone, Debug, PartialEq)]
pub enum SseEvent {
    /// Generated text.
    Token(String),
    /// `[DONE]`.
    Done,
    /// An error object in the stream.
    Error(String),
}

/// Incremental parser of OpenAI chat-completion SSE: bytes in, events out.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    /// Feeds bytes; returns the events of every complete line.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data = data.trim_start();
            if data == "[DONE]" {
                out.push(SseEvent::Done);
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if let Some(msg) = v.get("error").map(error_message) {
                out.push(SseEvent::Error(msg));
                continue;
            }
            let delta = &v["choices"][0]["delta"]["content"];
            if let Some(t) = delta.as_str().filter(|t| !t.is_empty()) {
                out.push(SseEvent::Token(t.to_string()));
            }
        }
        out
    }
}

fn error_message(e: &Value) -> String {
    e.get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string())
}

/// The message of an error response body (OpenAI-shaped, or any text).
pub fn error_body_message(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => v
            .get("error")
            .map(error_message)
            .or_else(|| v.get("detail").map(|d| d.to_string()))
            .unwrap_or_else(|| v.to_string()),
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

/// Where requests go.
// One value per chat session; the client handle inside is what makes it large.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Transport {
    /// Port-forward through the API server to `pod`'s port 5000.
    PortForward {
        /// Pods of the workspace's namespace.
        pods: Api<Pod>,
        /// The ready serving pod.
        pod: String,
    },
    /// A plain-HTTP URL (`--endpoint`).
    Endpoint {
        /// host:port to connect to.
        addr: String,
        /// Path prefix of the URL, without a trailing slash.
        base: String,
    },
}

/// Parses `--endpoint http://host[:port][/prefix]`.
pub fn parse_endpoint(url: &str) -> Result<Transport> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Error::Usage(format!(
            "--endpoint {url:?}: only http:// URLs are supported (port-forward is used without --endpoint)"
        ))
    })?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if hostport.is_empty() {
        return Err(Error::Usage(format!("--endpoint {url:?} has no host")));
    }
    let addr = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    Ok(Transport::Endpoint {
        addr,
        base: path.trim_end_matches('/').to_string(),
    })
}

impl Transport {
    /// Describes where requests go.
    pub fn describe(&self) -> String {
        match self {
            Self::PortForward { pod, .. } => {
                format!("pod {pod} port {RUNTIME_PORT} (port-forward through the API server)")
            }
            Self::Endpoint { addr, base } => format!("http://{addr}{base}"),
        }
    }

    /// POSTs `body` to `path` and calls `on_chunk` with every piece of the response body
    /// as it arrives. Returns the status and, for errors, the whole body.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        mut on_chunk: impl FnMut(&[u8]),
    ) -> Result<(u16, Vec<u8>)> {
        let (io, host, full_path, _pf) = match self {
            Self::PortForward { pods, pod } => {
                let mut pf = pods.portforward(pod, &[RUNTIME_PORT]).await.map_err(|e| {
                    Error::Chat(format!(
                        "cannot port-forward to pod {pod} port {RUNTIME_PORT}: {}",
                        chain(&e)
                    ))
                })?;
                let stream = pf.take_stream(RUNTIME_PORT).ok_or_else(|| {
                    Error::Chat(format!("the port-forward to pod {pod} gave no stream"))
                })?;
                (
                    Io::Forward(stream),
                    "localhost".to_string(),
                    path.to_string(),
                    Some(pf),
                )
            }
            Self::Endpoint { addr, base } => {
                let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
                    Error::Chat(format!(
                        "cannot connect to {addr}: {e} (is --endpoint right?)"
                    ))
                })?;
                (Io::Tcp(tcp), addr.clone(), format!("{base}{path}"), None)
            }
        };
        let (mut sender, conn) = match io {
            Io::Forward(s) => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .map_err(|e| Error::Chat(format!("HTTP handshake failed: {}", chain(&e))))?;
                (
                    sender,
                    tokio::spawn(async move { conn.await.map_err(|e| chain(&e)) }),
                )
            }
            Io::Tcp(s) => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .map_err(|e| Error::Chat(format!("HTTP handshake failed: {}", chain(&e))))?;
                (
                    sender,
                    tokio::spawn(async move { conn.await.map_err(|e| chain(&e)) }),
                )
            }
        };
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Chat(e.to_string()))?;
        let req = hyper::Request::post(full_path.as_str())
            .header("host", host)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream, application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| Error::Chat(format!("cannot build the request: {e}")))?;
        let resp = sender.send_request(req).await.map_err(|e| {
            Error::Chat(format!(
                "the model server did not answer: {} (is the runtime listening on port {RUNTIME_PORT}?)",
                chain(&e)
            ))
        })?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut all = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| Error::Chat(format!("the reply broke off: {}", chain(&e))))?;
            if let Some(data) = frame.data_ref() {
                if status < 300 {
                    on_chunk(data);
                }
                if status >= 300 || all.len() < 1 << 20 {
                    all.extend_from_slice(data);
                }
            }
        }
        conn.abort();
        Ok((status, all))
    }
}

enum Io {
    Forward(tokio::io::DuplexStream),
    Tcp(tokio::net::TcpStream),
}

/// Sends one message and streams the reply to `out`; returns the reply's text.
pub async fn exchange(
    transport: &Transport,
    session: &Session,
    user: &str,
    raw_chat: bool,
    out: &mut dyn std::io::Write,
) -> Result<String> {
    if raw_chat {
        let (status, body) = transport
            .post("/chat", &session.raw_body(user), |_| {})
            .await?;
        if status >= 300 {
            return Err(Error::Chat(format!(
                "the model server answered {status}: {}",
                error_body_message(&body)
            )));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| Error::Chat(format!("the /chat reply is not JSON: {e}")))?;
        let text = v["Result"].as_str().unwrap_or_default().to_string();
        writeln!(out, "{text}")?;
        out.flush()?;
        return Ok(text);
    }
    let mut parser = SseParser::default();
    let mut text = String::new();
    let mut stream_error = None;
    let mut write_error = None;
    let (status, body) = transport
        .post(
            "/v1/chat/completions",
            &session.openai_body(user),
            |chunk| {
                for ev in parser.push(chunk) {
                    match ev {
                        SseEvent::Token(t) => {
                            text.push_str(&t);
                            if let Err(e) = out.write_all(t.as_bytes()).and_then(|()| out.flush()) {
                                write_error = Some(e);
                            }
                        }
                        SseEvent::Error(e) => stream_error = Some(e),
                        SseEvent::Done => {}
                    }
                }
            },
        )
        .await?;
    if let Some(e) = write_error {
        return Err(Error::Io(e));
    }
    if status >= 300 {
        return Err(Error::Chat(format!(
            "the model server answered {status}: {}",
            error_body_message(&body)
        )));
    }
    writeln!(out)?;
    out.flush()?;
    if let Some(e) = stream_error {
        return Err(Error::Chat(format!(
            "the model server failed mid-reply: {e}"
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_handles_split_chunks_done_and_errors() {
        let mut p = SseParser::default();
        let a =
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\nda";
        let b = "ta: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r\n\r\ndata: [DONE]\n\n";
        let mut evs = p.push(a.as_bytes());
        evs.extend(p.push(b.as_bytes()));
        assert_eq!(
            evs,
            vec![
                SseEvent::Token("Hel".into()),
                SseEvent::Token("lo".into()),
                SseEvent::Done
            ]
        );
        let evs = p.push(b"data: {\"error\":{\"message\":\"boom\"}}\n");
        assert_eq!(evs, vec![SseEvent::Error("boom".into())]);
        assert_eq!(
            error_body_message(br#"{"error":{"message":"model is loading"}}"#),
            "model is loading"
        );
    }

    #[test]
    fn repl_commands_and_session() {
        assert_eq!(parse_repl("  "), ReplCommand::Empty);
        assert_eq!(parse_repl("/quit"), ReplCommand::Quit);
        assert_eq!(parse_repl("/clear"), ReplCommand::Clear);
        assert_eq!(
            parse_repl("/set temperature 0.2"),
            ReplCommand::Set("temperature".into(), "0.2".into())
        );
        assert_eq!(
            parse_repl("/system be brief"),
            ReplCommand::System("be brief".into())
        );
        assert_eq!(parse_repl("/nope"), ReplCommand::Unknown("nope".into()));
        assert_eq!(
            parse_repl("hi there"),
            ReplCommand::Message("hi there".into())
        );

        let mut s = Session::default();
        assert!(s.set("temperature", "0.2").is_ok());
        assert!(s.set("temperature", "hot").is_err());
        assert!(s.set("max-tokens", "16").is_ok());
        assert!(s.set("top_p", "0").is_err());
        assert!(s.set("colour", "1").is_err());
        s.system = Some("be brief".into());
        s.record("hi", "hello");
        let body = s.openai_body("again");
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(body["max_tokens"], 16);
        assert_eq!(body["stream"], true);
        let roles: Vec<&str> = body["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["role"].as_str())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        let raw = s.raw_body("again");
        assert_eq!(raw["generate_kwargs"]["max_new_tokens"], 16);
        assert_eq!(raw["return_full_text"], false);
    }

    #[test]
    fn endpoints_parse() {
        let Transport::Endpoint { addr, base } =
            parse_endpoint("http://127.0.0.1:5000/").expect("ok")
        else {
            panic!()
        };
        assert_eq!((addr.as_str(), base.as_str()), ("127.0.0.1:5000", ""));
        let Transport::Endpoint { addr, base } =
            parse_endpoint("http://svc.ns/prefix").expect("ok")
        else {
            panic!()
        };
        assert_eq!((addr.as_str(), base.as_str()), ("svc.ns:80", "/prefix"));
        assert!(parse_endpoint("https://x").is_err());
    }
}
