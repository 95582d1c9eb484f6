//! Component tests: real HTTP on loopback against `kaito-runtime` serving generated tiny models.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    Server, greedy_chat, raw_post, rss_kib, scratch, sse_data, stalled_reader, tiny_model,
};
use kaito_runtime::server::{AppState, Limits, LoadState, router};
use kaito_runtime::testmodel::Arch;
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(180);

async fn post(client: &reqwest::Client, url: String, body: &Value) -> (u16, Value) {
    let r = client.post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// A ready `kaito-runtime` with `args`, serving the tiny Llama model written into a fresh
/// scratch directory `name`.
async fn ready_server(name: &str, args: &[&str]) -> Server {
    let dir = scratch(name);
    let (model, _) = tiny_model(&dir, Arch::Llama);
    let mut server = Server::start(&model, args, &[]);
    server.wait_ready(READY).await;
    server
}

/// The text of the server's `/metrics`.
async fn metrics_text(client: &reqwest::Client, server: &Server) -> String {
    client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one metric series (a line `SERIES VALUE` of `/metrics`), if present.
async fn metric(client: &reqwest::Client, server: &Server, series: &str) -> Option<f64> {
    let text = metrics_text(client, server).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits (at most 30 s) until `series` reads `value`.
async fn wait_metric(client: &reqwest::Client, server: &Server, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = metric(client, server, series).await;
        if now == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {now:?}, never reached {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Before the model is loaded: readiness 503, liveness 200, generation 503, bad input still 400.
#[tokio::test]
async fn health_before_load_and_failed_load() {
    let state = AppState::new(
        "tiny",
        Limits {
            max_running: 1,
            max_queued: 1,
            max_body_bytes: 1024,
            ..Limits::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, router(state.clone())).into_future());
    let client = reqwest::Client::new();

    let r = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "Loading"})
    );
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let (status, body) = post(&client, format!("{base}/chat"), &json!({"prompt": "hi"})).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "model_not_ready");
    let (status, body) = post(&client, format!("{base}/chat"), &json!({})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing `prompt`")
    );

    let r = client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["data"][0]["id"], "tiny");
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.contains("kaito_runtime_model_ready 0"), "{text}");

    state.set_load_state(LoadState::Failed("broken weights".into()));
    let r = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body = r.json::<Value>().await.unwrap();
    assert_eq!(body["status"], "Unhealthy");
    assert!(body["error"].as_str().unwrap().contains("broken weights"));
}

/// A model directory that does not exist fails fast (no hub lookup) with a clear error.
#[test]
fn missing_model_dir_exits_with_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kaito-runtime"))
        .args([
            "--model-dir",
            "/nonexistent/model",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

/// KAITO `/chat` contract, OpenAI routes, SSE framing, 400/404/413 paths and metrics.
#[tokio::test]
async fn chat_contract_openai_and_metrics() {
    let server = ready_server("contract", &["--max-body-bytes", "4096"]).await;
    let client = reqwest::Client::new();
    let chat = server.url("/chat");

    // Greedy is deterministic; the generated model emits one printable byte per token.
    let (status, a) = post(&client, chat.clone(), &greedy_chat("Hello", 8)).await;
    assert_eq!(status, 200, "{a}");
    let generated = a["Result"].as_str().unwrap().to_string();
    assert_eq!(generated.len(), 8, "{generated:?}");
    let (_, b) = post(&client, chat.clone(), &greedy_chat("Hello", 8)).await;
    assert_eq!(a, b);

    // return_full_text (default true) prepends the prompt.
    let full =
        json!({"prompt": "Hello", "generate_kwargs": {"do_sample": false, "max_new_tokens": 8}});
    let (_, c) = post(&client, chat.clone(), &full).await;
    assert_eq!(c["Result"].as_str().unwrap(), format!("Hello{generated}"));

    // max_length counts the prompt (HF semantics): "Hello" is 5 byte tokens.
    let by_length = json!({"prompt": "Hello", "return_full_text": false,
        "generate_kwargs": {"do_sample": false, "max_length": 9}});
    let (_, d) = post(&client, chat.clone(), &by_length).await;
    assert_eq!(d["Result"].as_str().unwrap(), &generated[..4]);
    let too_short = json!({"prompt": "Hello", "generate_kwargs": {"max_length": 3}});
    let (status, e) = post(&client, chat.clone(), &too_short).await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_length")
    );

    // Default generate_kwargs sample (do_sample=true, top_k=10) and still answer.
    let (status, s) = post(&client, chat.clone(), &json!({"prompt": "Hi"})).await;
    assert_eq!(status, 200);
    assert!(s["Result"].as_str().unwrap().starts_with("Hi"));

    // messages instead of prompt.
    let msgs = json!({"messages": [{"role": "user", "content": "Hello"}],
        "generate_kwargs": {"do_sample": false, "max_new_tokens": 6}});
    let (status, m) = post(&client, chat.clone(), &msgs).await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["Result"].as_str().unwrap().len(), 6);

    // 400s: missing prompt, bad JSON, bad parameter; over-long prompt; 413 too-large body.
    let (status, e) = post(&client, chat.clone(), &json!({"generate_kwargs": {}})).await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing `prompt`")
    );
    let r = client
        .post(chat.clone())
        .header("content-type", "application/json")
        .body("{\"prompt\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON")
    );
    let bad = json!({"prompt": "x", "generate_kwargs": {"temperature": -1.0}});
    assert_eq!(post(&client, chat.clone(), &bad).await.0, 400);
    let long = json!({"prompt": "a".repeat(600), "generate_kwargs": {"max_new_tokens": 4}});
    let (status, e) = post(&client, chat.clone(), &long).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["code"], "context_length_exceeded");
    let huge = json!({"prompt": "a".repeat(8000)});
    let (status, e) = post(&client, chat.clone(), &huge).await;
    assert_eq!(status, 413);
    assert_eq!(e["error"]["code"], "payload_too_large");

    // OpenAI: models, chat completion, completion, wrong model.
    let r = client.get(server.url("/v1/models")).send().await.unwrap();
    let models: Value = r.json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");
    let req = json!({"model": "tiny", "messages": [{"role": "user", "content": "Hello"}],
        "temperature": 0, "max_tokens": 5});
    let (status, cc) = post(&client, server.url("/v1/chat/completions"), &req).await;
    assert_eq!(status, 200, "{cc}");
    assert_eq!(cc["object"], "chat.completion");
    assert_eq!(cc["model"], "tiny");
    assert_eq!(cc["choices"][0]["message"]["role"], "assistant");
    assert_eq!(cc["choices"][0]["finish_reason"], "length");
    assert_eq!(cc["usage"]["completion_tokens"], 5);
    let content = cc["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(content.len(), 5);
    let cmpl = json!({"prompt": "Hello", "max_tokens": 8, "temperature": 0, "echo": true});
    let (status, co) = post(&client, server.url("/v1/completions"), &cmpl).await;
    assert_eq!(status, 200, "{co}");
    assert_eq!(co["object"], "text_completion");
    assert_eq!(
        co["choices"][0]["text"].as_str().unwrap(),
        format!("Hello{generated}")
    );
    let wrong = json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]});
    let (status, e) = post(&client, server.url("/v1/chat/completions"), &wrong).await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["code"], "model_not_found");

    // SSE: framing, role first, [DONE] last, usage chunk, same text as the non-streamed answer.
    let mut stream_req = req.clone();
    stream_req["stream"] = json!(true);
    stream_req["stream_options"] = json!({"include_usage": true});
    let r = client
        .post(server.url("/v1/chat/completions"))
        .json(&stream_req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    let body = r.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content);
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .expect("usage chunk");
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "length")
    );

    // Streamed completion.
    let r = client
        .post(server.url("/v1/completions"))
        .json(&json!({"prompt": "Hello", "max_tokens": 8, "temperature": 0, "stream": true}))
        .send()
        .await
        .unwrap();
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, generated);

    // Metrics after requests.
    let text = metrics_text(&client, &server).await;
    for series in [
        "kaito_runtime_requests_total{route=\"/chat\",status=\"200\"}",
        "kaito_runtime_requests_total{route=\"/chat\",status=\"400\"}",
        "kaito_runtime_requests_total{route=\"/chat\",status=\"413\"}",
        "kaito_runtime_requests_total{route=\"/v1/chat/completions\",status=\"200\"}",
        "kaito_runtime_time_to_first_token_seconds_bucket",
        "kaito_runtime_inter_token_latency_seconds_bucket",
        "kaito_runtime_running_sequences 0",
        "kaito_runtime_queued_requests 0",
        "kaito_runtime_model_ready 1",
        "kaito_runtime_model_load_seconds",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    let generated_total = text
        .lines()
        .find_map(|l| l.strip_prefix("kaito_runtime_generated_tokens_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("generated tokens counter");
    assert!(generated_total >= 40.0, "{generated_total}");
}

/// Phi-3 architecture (fused qkv / gate_up) loads and generates too.
#[tokio::test]
async fn phi3_model_serves() {
    let dir = scratch("phi3");
    let (model, _) = tiny_model(&dir, Arch::Phi3);
    let mut server = Server::start(&model, &[], &[]);
    server.wait_ready(READY).await;
    let client = reqwest::Client::new();
    let (status, body) = post(&client, server.url("/chat"), &greedy_chat("Hello", 6)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Result"].as_str().unwrap().len(), 6);
}

/// With one slot and no queue, concurrent requests beyond the first are refused with 429.
#[tokio::test]
async fn backpressure_answers_429() {
    let server = ready_server("backpressure", &["--max-running", "1", "--max-queued", "1"]).await;
    let client = reqwest::Client::new();
    let url = server.url("/chat");
    let requests = (0..8).map(|_| {
        let client = client.clone();
        let url = url.clone();
        async move { post(&client, url, &greedy_chat("Hello", 200)).await }
    });
    let results = futures::future::join_all(requests).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, b)| b)
        .collect();
    assert!(ok >= 1, "{results:?}");
    assert!(!refused.is_empty(), "expected some 429s: {results:?}");
    assert_eq!(ok + refused.len(), 8, "{results:?}");
    for body in refused {
        assert_eq!(body["error"]["code"], "too_many_requests");
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }
    let text = metrics_text(&client, &server).await;
    assert!(text.contains("kaito_runtime_requests_total{route=\"/chat\",status=\"429\"}"));
}

/// Adapter strength scales the delta: 0 reproduces the base model, 1 changes the output.
#[tokio::test]
async fn adapter_strength_zero_is_base_and_one_differs() {
    let dir = scratch("adapters");
    let (model, adapter) = tiny_model(&dir, Arch::Llama);
    let adapters_dir = adapter.parent().unwrap().to_str().unwrap().to_string();
    let mut base = Server::start(&model, &[], &[]);
    let mut zero = Server::start(
        &model,
        &["--adapters-dir", &adapters_dir],
        &[("adapter-a", "0")],
    );
    let mut one = Server::start(
        &model,
        &["--adapters-dir", &adapters_dir],
        &[("adapter-a", "1.0")],
    );
    base.wait_ready(READY).await;
    zero.wait_ready(READY).await;
    one.wait_ready(READY).await;
    let client = reqwest::Client::new();
    let body = greedy_chat("The adapter test prompt", 24);
    let (_, b) = post(&client, base.url("/chat"), &body).await;
    let (_, z) = post(&client, zero.url("/chat"), &body).await;
    let (_, o) = post(&client, one.url("/chat"), &body).await;
    let (b, z, o) = (
        b["Result"].as_str().unwrap(),
        z["Result"].as_str().unwrap(),
        o["Result"].as_str().unwrap(),
    );
    assert_eq!(b.len(), 24);
    assert_eq!(z, b, "strength 0 must equal the base output");
    assert_ne!(o, b, "strength 1 must change the output");
}

/// An invalid strength stops the server with a clear error.
#[test]
fn invalid_adapter_strength_is_rejected() {
    let dir = scratch("bad-strength");
    let (model, adapter) = tiny_model(&dir, Arch::Llama);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kaito-runtime"))
        .arg("--model-dir")
        .arg(&model)
        .arg("--adapters-dir")
        .arg(adapter.parent().unwrap())
        .args(["--host", "127.0.0.1", "--port", "0"])
        .env("adapter-a", "2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("between 0 and 1"), "{stderr}");
}

/// SIGTERM during a stream: the stream still completes, then the process exits 0.
#[tokio::test]
async fn shutdown_lets_in_flight_stream_finish() {
    let mut server = ready_server("shutdown", &["--shutdown-grace-seconds", "60"]).await;
    let client = reqwest::Client::new();
    let req = json!({"messages": [{"role": "user", "content": "Hi"}], "temperature": 0,
        "max_tokens": 400, "stream": true});
    let mut r = client
        .post(server.url("/v1/chat/completions"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().expect("first event");
    let mut body = String::from_utf8_lossy(&first).into_owned();
    assert!(
        !body.contains("[DONE]"),
        "the stream must still be running at SIGTERM"
    );
    server.terminate();
    while let Some(chunk) = r.chunk().await.unwrap() {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text.len(), 400, "the in-flight stream must run to its end");
    let status = server.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status}");
}

/// Starts a streamed greedy completion of `max_tokens` tokens; resolves to the whole SSE body.
fn spawn_stream(
    client: &reqwest::Client,
    url: String,
    max_tokens: usize,
) -> tokio::task::JoinHandle<String> {
    let client = client.clone();
    tokio::spawn(async move {
        let r = client
            .post(url)
            .json(
                &json!({"prompt": "hello", "max_tokens": max_tokens, "temperature": 0,
                          "stream": true}),
            )
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    })
}

/// Clients that hang up while their prompt is being tokenized (the tokenizer runs on the
/// engine's thread) must not stop the engine: a stream that is running completes, and the
/// server still answers afterwards. 200 hang-ups with a long prompt; the figures (times, the
/// server's RSS) are printed for the record (`--nocapture`).
#[tokio::test]
async fn clients_hanging_up_during_tokenization_do_not_stop_other_generations() {
    use std::io::Write as _;
    let mut server = ready_server("hangups", &["--max-running", "4"]).await;
    let rss_before = rss_kib(server.child.id());
    let client = reqwest::Client::new();
    let started = Instant::now();
    let stream = spawn_stream(&client, server.url("/v1/completions"), 300);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = server.addr();
    let body = json!({"messages": [{"role": "user", "content": "a ".repeat(200)}],
                      "max_tokens": 4})
    .to_string();
    let request = raw_post("/v1/chat/completions", &body);
    let hangups = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        for _ in 0..200 {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        started.elapsed()
    });
    let hung_up_in = hangups.await.unwrap();
    let text = stream.await.unwrap();
    let stream_done = started.elapsed();
    let events = sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(
        !text.contains("\"error\""),
        "the running stream was cut: {}",
        &text[text.len().saturating_sub(400)..]
    );
    let asked = Instant::now();
    let (status, answer) = post(&client, server.url("/chat"), &greedy_chat("Hello", 4)).await;
    let answered = asked.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
    eprintln!(
        "figures: 200 clients hung up in {:.2} s during a 300-token stream, which completed \
         {:.2} s after it started; the next /chat was answered in {:.3} s; server RSS {} KiB \
         before, {} KiB after",
        hung_up_in.as_secs_f64(),
        stream_done.as_secs_f64(),
        answered.as_secs_f64(),
        rss_before.unwrap_or(0),
        rss_kib(server.child.id()).unwrap_or(0)
    );
}

/// Admission comes first: with every slot taken and no queue, a request is refused with 429
/// before its prompt is tokenized (before, it was tokenized on the engine's thread and then
/// answered 400 for its length, bypassing the limit).
#[tokio::test]
async fn admission_comes_before_tokenization() {
    let server = ready_server(
        "admission-first",
        &["--max-running", "1", "--max-queued", "0"],
    )
    .await;
    let client = reqwest::Client::new();
    let busy = spawn_stream(&client, server.url("/v1/completions"), 480);
    // Wait until the stream holds the one slot.
    wait_metric(&client, &server, "kaito_runtime_running_sequences", 1.0).await;
    let too_long = json!({"prompt": "a".repeat(600), "generate_kwargs": {"max_new_tokens": 4}});
    let (status, body) = post(&client, server.url("/chat"), &too_long).await;
    assert_eq!(status, 429, "{body}");
    let text = busy.await.unwrap();
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
}

/// A request that waits for a slot longer than `--queue-timeout-seconds` gets 503 with
/// Retry-After and the OpenAI-shaped body, and leaves the queue; so does one whose client gives
/// up while it waits (the queued gauge went stale before).
#[tokio::test]
async fn queue_deadline_answers_503_and_releases_the_queue() {
    let server = ready_server(
        "queue-deadline",
        &[
            "--max-running",
            "1",
            "--max-queued",
            "4",
            "--queue-timeout-seconds",
            "0.5",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let busy = spawn_stream(&client, server.url("/v1/completions"), 480);
    wait_metric(&client, &server, "kaito_runtime_running_sequences", 1.0).await;

    // A client that gives up while queued: the queue forgets it at once.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(server.url("/chat"))
        .json(&greedy_chat("Hello", 4))
        .send()
        .await;
    assert!(gave_up.is_err(), "{gave_up:?}");
    wait_metric(&client, &server, "kaito_runtime_queued_requests", 0.0).await;

    let started = Instant::now();
    let r = client
        .post(server.url("/chat"))
        .json(&greedy_chat("Hello", 4))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_timeout", "{body}");
    assert_eq!(body["error"]["type"], "service_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("--queue-timeout-seconds"), "{message}");
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    assert_eq!(
        metric(&client, &server, "kaito_runtime_queued_requests").await,
        Some(0.0)
    );
    // A full queue's 429 says when to retry too.
    let mut server_busy = Vec::new();
    for _ in 0..6 {
        let client = client.clone();
        let url = server.url("/chat");
        server_busy.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&greedy_chat("Hello", 4))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().get("retry-after").cloned())
        }));
    }
    let answers = futures::future::join_all(server_busy).await;
    let refused: Vec<_> = answers
        .into_iter()
        .map(Result::unwrap)
        .filter(|(status, _)| *status == 429)
        .collect();
    assert!(
        !refused.is_empty(),
        "4 may wait, 6 asked: some must get 429"
    );
    assert!(refused.iter().all(|(_, retry)| retry.is_some()));
    let text = busy.await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
}

/// `--max-tokens` caps new tokens: an explicit ask above it is a 400 naming the field and the
/// cap; a request that asks for nothing (or for a default) gets at most the cap.
#[tokio::test]
async fn max_tokens_flag_caps_new_tokens() {
    let server = ready_server("max-tokens", &["--max-tokens", "8"]).await;
    let client = reqwest::Client::new();
    let chat = |extra: Value| {
        let mut req = json!({"messages": [{"role": "user", "content": "Hello"}],
                             "temperature": 0});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        req
    };
    let cc = server.url("/v1/chat/completions");
    for field in ["max_tokens", "max_completion_tokens"] {
        let (status, body) = post(&client, cc.clone(), &chat(json!({field: 9}))).await;
        assert_eq!(status, 400, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{field}` is 9")) && message.contains("cap of 8"),
            "{message}"
        );
    }
    let (status, body) = post(&client, cc.clone(), &chat(json!({"max_tokens": 8}))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&client, cc.clone(), &chat(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 8, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    // Streamed, no max_tokens: capped too.
    let r = client
        .post(cc.clone())
        .json(&chat(
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .send()
        .await
        .unwrap();
    let data = sse_data(&r.text().await.unwrap());
    let usage = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|c| c["usage"].is_object())
        .expect("usage chunk");
    assert_eq!(usage["usage"]["completion_tokens"], 8);
    // /v1/completions' default of 16 is capped, not refused.
    let (status, body) = post(
        &client,
        server.url("/v1/completions"),
        &json!({"prompt": "Hello", "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 8);
    // /chat: max_new_tokens above the cap is refused; max_length's default is capped.
    let (status, body) = post(&client, server.url("/chat"), &greedy_chat("Hello", 9)).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`max_new_tokens` is 9"), "{message}");
    let by_default = json!({"prompt": "Hello", "return_full_text": false,
                            "generate_kwargs": {"do_sample": false}});
    let (status, body) = post(&client, server.url("/chat"), &by_default).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Result"].as_str().unwrap().len(), 8, "{body}");
}

/// Request headers are bounded: beyond `--max-header-bytes` (32 KiB by default) or 100 fields
/// the answer is 431 or a closed connection — never a request served (a 40 KiB header was
/// accepted before: hyper's own buffer limit is ~400 KiB).
#[tokio::test]
async fn oversized_request_headers_are_refused() {
    let server = ready_server("headers", &[]).await;
    let client = reqwest::Client::new();
    let big = client
        .get(server.url("/health"))
        .header("x-big", "a".repeat(40 * 1024))
        .send()
        .await;
    match big {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect(), "{e:?}"),
    }
    let mut many = client.get(server.url("/health"));
    for i in 0..101 {
        many = many.header(format!("x-h{i}"), "1");
    }
    assert_eq!(many.send().await.unwrap().status(), 431);
    let r = client
        .get(server.url("/health"))
        .header("x-fits", "a".repeat(16 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a 16 KiB header is within the limit");
}

/// A connection that never finishes its request headers (or sends nothing) is closed after
/// `--header-read-timeout-seconds`.
#[tokio::test]
async fn slow_request_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = ready_server("header-timeout", &["--header-read-timeout-seconds", "0.5"]).await;
    let addr = server.addr();
    for partial in ["GET /hea", ""] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(partial.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
        let waited = started.elapsed();
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "{partial:?}: the connection must be closed, got {read:?} after {waited:?}"
        );
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
            "{partial:?}: closed after {waited:?}"
        );
    }
    // A complete request still gets its answer; the closed connections are counted.
    let client = reqwest::Client::new();
    let r = client.get(server.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let series = "kaito_runtime_connections_timed_out_total{reason=\"header_read\"}";
    assert!(metric(&client, &server, series).await >= Some(2.0));
}

/// 16 clients (the default `--max-running`) that start a stream and stop reading hold every
/// slot only until `--write-timeout-seconds`: then their connections are closed, their
/// generations stopped, and a fresh client is served. Before, the slots were held for as long
/// as the stalled clients kept their connections open. `--send-buffer-bytes` keeps loopback's
/// multi-megabyte socket buffers from absorbing the whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_readers_lose_their_slots_after_the_write_timeout() {
    let server = ready_server(
        "stalled",
        &[
            "--write-timeout-seconds",
            "2",
            "--send-buffer-bytes",
            "4096",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let addr = server.addr();
    let request = raw_post(
        "/v1/completions",
        &json!({"prompt": "hello", "max_tokens": 480, "temperature": 0, "stream": true})
            .to_string(),
    );
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..16 {
        stalled.push(stalled_reader(&addr, &request).await);
    }
    wait_metric(&client, &server, "kaito_runtime_running_sequences", 16.0).await;
    let full = started.elapsed();
    let rss_stalled = rss_kib(server.child.id());
    let asked = Instant::now();
    let (status, body) = post(&client, server.url("/chat"), &greedy_chat("Hello", 4)).await;
    let served = asked.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        served < Duration::from_secs(15),
        "a fresh client waited {served:?} behind 16 stalled readers"
    );
    wait_metric(&client, &server, "kaito_runtime_running_sequences", 0.0).await;
    assert_eq!(
        metric(
            &client,
            &server,
            "kaito_runtime_connections_timed_out_total{reason=\"write\"}"
        )
        .await,
        Some(16.0)
    );
    eprintln!(
        "figures: 16 stalled readers held all slots after {:.2} s; a fresh /chat was served \
         {:.2} s later (write timeout 2 s); server RSS {} KiB with them stalled, {} KiB after",
        full.as_secs_f64(),
        served.as_secs_f64(),
        rss_stalled.unwrap_or(0),
        rss_kib(server.child.id()).unwrap_or(0)
    );
    drop(stalled);
}
