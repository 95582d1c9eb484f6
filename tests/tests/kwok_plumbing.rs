//! The plumbing `kubectl kaito logs/chat` builds on: `kubectl logs` of a pod on a simulated node
//! reads a CRI-format log file (kwok Logs), and `kubectl port-forward` to a pod port reaches a
//! real server on loopback (kwok PortForward). Both go kubectl -> kube-apiserver -> kwok's
//! kubelet-like server over TLS, as with a real kubelet.

use kaito_e2e::{Cluster, GpuNode, TestNamespace, unique_name, wait_for};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::Duration;

/// A pod pinned to the test's own GPU node, waited for until Ready.
fn ready_pod(ns: &TestNamespace<'_>, name: &str, group: &str, port: u16) -> anyhow::Result<()> {
    ns.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeSelector: {{kaito-e2e/group: {group}}}
  tolerations: [{{key: sku, operator: Exists, effect: NoSchedule}}]
  containers:
  - name: server
    image: registry.invalid/inference:latest
    ports: [{{containerPort: {port}}}]
  - name: sidecar
    image: registry.invalid/sidecar:latest
"#
    ))?;
    ns.kubectl_ok([
        "wait",
        "--for=condition=Ready",
        &format!("pod/{name}"),
        "--timeout=90s",
    ])?;
    Ok(())
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn kubectl_logs_reads_the_log_file_named_by_a_kwok_logs_object() -> anyhow::Result<()> {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("logs")?;
    let group = ns.name().to_owned();
    let _node = cluster
        .add_gpu_node(&GpuNode::new(unique_name("gpu-logs")).label("kaito-e2e/group", &group))?;
    ready_pod(&ns, "inference", &group, 5000)?;

    // A container log file in the CRI format a kubelet reads.
    let dir = std::env::temp_dir().join(unique_name("kaito-e2e-logs"));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("server.log");
    let lines = [
        "INFO: loading model phi-3-mini-4k-instruct",
        "INFO: Uvicorn running on http://0.0.0.0:5000",
        &format!("marker {}", ns.name()),
    ];
    let mut text = String::new();
    for (i, l) in lines.iter().enumerate() {
        text.push_str(&format!("2026-01-01T00:00:0{i}.000000000Z stdout F {l}\n"));
    }
    text.push_str("2026-01-01T00:00:09.000000000Z stderr P partial \n");
    text.push_str("2026-01-01T00:00:09.100000000Z stderr F line\n");
    std::fs::write(&file, text)?;
    let other = dir.join("sidecar.log");
    std::fs::write(
        &other,
        "2026-01-01T00:00:00.000000000Z stdout F sidecar says hi\n",
    )?;

    ns.apply(&format!(
        r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Logs
metadata:
  name: inference
spec:
  logs:
  - containers: [server]
    logsFile: {}
  - containers: [sidecar]
    logsFile: {}
"#,
        file.display(),
        other.display()
    ))?;

    let mut expected: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    expected.push("partial line".into());
    // kwok picks the new Logs object up from its informer: poll briefly.
    let got = wait_for(
        "kubectl logs to return the file's lines",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let out = ns.kubectl(["logs", "pod/inference", "-c", "server"])?;
            Ok(
                (out.success() && out.stdout.lines().count() >= expected.len())
                    .then_some(out.stdout),
            )
        },
    )?;
    assert_eq!(got.lines().collect::<Vec<_>>(), expected, "{got}");

    // --tail counts the file's CRI entries; the last two make up the one "partial line".
    let tail = ns.kubectl_ok(["logs", "pod/inference", "-c", "server", "--tail=3"])?;
    assert_eq!(tail.lines().collect::<Vec<_>>(), expected[2..], "{tail}");
    let stamped = ns.kubectl_ok(["logs", "pod/inference", "-c", "server", "--timestamps"])?;
    assert!(
        stamped.starts_with("2026-01-01T00:00:00.000000000Z INFO: loading model"),
        "timestamps come from the CRI file: {stamped}"
    );
    let sidecar = ns.kubectl_ok(["logs", "pod/inference", "-c", "sidecar"])?;
    assert_eq!(sidecar.trim_end(), "sidecar says hi");

    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// An HTTP server on 127.0.0.1 answering every request with `body`; serves until the process ends.
fn serve_http(body: String) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                // Read the request head.
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    if line == "\r\n" || line == "\n" {
                        break;
                    }
                    line.clear();
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
            });
        }
    });
    Ok(port)
}

/// Kills the kubectl port-forward child on every exit path.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kubectl port-forward pod/NAME :PORT` and returns it with the local port it chose.
fn port_forward(ns: &TestNamespace<'_>, pod: &str, port: u16) -> anyhow::Result<(KillOnDrop, u16)> {
    let mut child = ns
        .kubectl_command([
            "port-forward",
            &format!("pod/{pod}"),
            &format!(":{port}"),
            "--address=127.0.0.1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout");
    let child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // "Forwarding from 127.0.0.1:41234 -> 5000"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                let local = rest
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<u16>().ok());
                let _ = tx.send(local);
            }
        }
    });
    let local = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow::anyhow!("kubectl port-forward printed no local port"))?
        .ok_or_else(|| anyhow::anyhow!("cannot parse kubectl port-forward's output"))?;
    Ok((child, local))
}

/// One HTTP/1.1 GET through `port`; returns the status line and the body. Reads exactly
/// Content-Length bytes: kubectl port-forward does not pass the server's close on as EOF.
fn http_get(port: u16, timeout: Duration) -> anyhow::Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET /v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            anyhow::bail!("connection closed in the response head");
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status.trim_end().to_owned(), String::from_utf8(body)?))
}

#[test]
#[ignore = "end-to-end: needs the local cluster; run tests/e2e.sh"]
fn kubectl_port_forward_reaches_a_local_server_through_a_kwok_port_forward() -> anyhow::Result<()> {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("port-forward")?;
    let group = ns.name().to_owned();
    let _node = cluster
        .add_gpu_node(&GpuNode::new(unique_name("gpu-pf")).label("kaito-e2e/group", &group))?;
    ready_pod(&ns, "inference", &group, 5000)?;

    let body = format!(
        "{{\"object\":\"list\",\"data\":[{{\"id\":\"{}\"}}]}}",
        ns.name()
    );
    let target = serve_http(body.clone())?;
    ns.apply(&format!(
        r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: PortForward
metadata:
  name: inference
spec:
  forwards:
  - ports: [5000]
    target: {{address: 127.0.0.1, port: {target}}}
"#
    ))?;

    // kwok sees the PortForward object through its informer; retry until a request gets through.
    let (status, got) = wait_for(
        "an HTTP response through kubectl port-forward",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let (_pf, local) = port_forward(&ns, "inference", 5000)?;
            Ok(http_get(local, Duration::from_secs(5)).ok())
        },
    )?;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(got, body);

    // Several requests over one port-forward session.
    let (_pf, local) = port_forward(&ns, "inference", 5000)?;
    for _ in 0..3 {
        let (status, got) = http_get(local, Duration::from_secs(10))?;
        assert_eq!(
            (status.as_str(), got.as_str()),
            ("HTTP/1.1 200 OK", body.as_str())
        );
    }

    // A port without a forward rule gets no answer.
    let (_pf2, local2) = port_forward(&ns, "inference", 6000)?;
    let refused = http_get(local2, Duration::from_secs(3));
    assert!(
        refused.is_err(),
        "port 6000 has no forward rule but answered: {refused:?}"
    );
    Ok(())
}
