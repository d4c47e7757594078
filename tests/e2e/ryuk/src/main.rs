//! A Ryuk-compatible reaper for the e2e tests: speaks moby-ryuk's TCP line protocol on :8080
//! (`label=k=v&label=…` → `ACK`), and once the last client has been gone for
//! `RYUK_RECONNECTION_TIMEOUT`, deletes the matching containers, networks and volumes through the
//! Docker API at `DOCKER_HOST` (tcp only), then exits. Std only plus serde_json, built static.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    connected: usize,
    ever_connected: bool,
    last_change: Option<Instant>,
    filters: Vec<Vec<String>>,
}

fn duration_env(name: &str, default: u64) -> Duration {
    let value = std::env::var(name).unwrap_or_default();
    let value = value.trim();
    let seconds = if let Some(ms) = value.strip_suffix("ms") {
        ms.parse::<u64>().map(|ms| ms / 1000).ok()
    } else if let Some(m) = value.strip_suffix('m') {
        m.parse::<u64>().map(|m| m * 60).ok()
    } else {
        value.trim_end_matches('s').parse::<u64>().ok()
    };
    Duration::from_secs(seconds.unwrap_or(default))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `label=a=b&label=c` → `["a=b", "c"]`
fn parse_line(line: &str) -> Vec<String> {
    line.split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == "label")
        .map(|(_, value)| percent_decode(value))
        .collect()
}

fn serve(stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let labels = parse_line(line);
        println!("adding filter: {labels:?}");
        if !labels.is_empty() {
            state.lock().unwrap().filters.push(labels);
        }
        if writer.write_all(b"ACK\n").is_err() {
            break;
        }
    }
    let mut state = state.lock().unwrap();
    state.connected -= 1;
    state.last_change = Some(Instant::now());
    println!("client disconnected, {} left", state.connected);
}

struct Docker {
    address: String,
}

impl Docker {
    fn request(&self, method: &str, path: &str) -> Result<(u16, String), String> {
        let mut stream = TcpStream::connect(&self.address).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        Ok((
            status,
            if chunked {
                dechunk(body)
            } else {
                body.to_owned()
            },
        ))
    }

    fn list(&self, path: &str, labels: &[String]) -> Vec<serde_json::Value> {
        let filters = serde_json::json!({ "label": labels }).to_string();
        let path = format!(
            "{path}{}filters={}",
            if path.contains('?') { "&" } else { "?" },
            encode(&filters)
        );
        match self.request("GET", &path) {
            Ok((200, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(serde_json::Value::Array(items)) => items,
                Ok(object) => object["Volumes"].as_array().cloned().unwrap_or_default(),
                Err(e) => {
                    println!("bad JSON from {path}: {e}");
                    Vec::new()
                }
            },
            other => {
                println!("GET {path}: {other:?}");
                Vec::new()
            }
        }
    }

    fn delete(&self, path: &str) {
        match self.request("DELETE", path) {
            Ok((status, _)) if status < 300 || status == 404 => println!("DELETE {path}: {status}"),
            other => println!("DELETE {path} failed: {other:?}"),
        }
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn prune(docker: &Docker, filters: &[Vec<String>]) {
    let mut removed = 0;
    for labels in filters {
        for container in docker.list("/containers/json?all=1", labels) {
            if container["Labels"]["org.testcontainers.ryuk"] == "true" {
                continue;
            }
            if let Some(id) = container["Id"].as_str() {
                docker.delete(&format!("/containers/{id}?force=1&v=1"));
                removed += 1;
            }
        }
        for network in docker.list("/networks", labels) {
            if let Some(id) = network["Id"].as_str() {
                docker.delete(&format!("/networks/{id}"));
                removed += 1;
            }
        }
        for volume in docker.list("/volumes", labels) {
            if let Some(name) = volume["Name"].as_str() {
                docker.delete(&format!("/volumes/{}", encode(name)));
                removed += 1;
            }
        }
    }
    println!("removed {removed} objects");
}

fn main() {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let Some(address) = host.strip_prefix("tcp://") else {
        eprintln!("DOCKER_HOST must be tcp://HOST:PORT, got {host:?}");
        std::process::exit(1);
    };
    let docker = Docker {
        address: address.trim_end_matches('/').to_owned(),
    };
    let port = std::env::var("RYUK_PORT").unwrap_or_else(|_| "8080".into());
    let connection_timeout = duration_env("RYUK_CONNECTION_TIMEOUT", 60);
    let reconnection_timeout = duration_env("RYUK_RECONNECTION_TIMEOUT", 10);
    let listener = TcpListener::bind(("0.0.0.0", port.parse().unwrap_or(8080))).expect("bind");
    let state = Arc::new(Mutex::new(State::default()));
    let started = Instant::now();
    {
        let state = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                {
                    let mut state = state.lock().unwrap();
                    state.connected += 1;
                    state.ever_connected = true;
                    state.last_change = Some(Instant::now());
                }
                println!("client connected");
                let state = state.clone();
                thread::spawn(move || serve(stream, state));
            }
        });
    }
    println!("ryuk (podbridge test reaper) Started!");
    loop {
        thread::sleep(Duration::from_millis(250));
        let state = state.lock().unwrap();
        if !state.ever_connected {
            if started.elapsed() > connection_timeout {
                println!("no client connected within {connection_timeout:?}, exiting");
                return;
            }
            continue;
        }
        if state.connected == 0
            && state
                .last_change
                .is_some_and(|at| at.elapsed() > reconnection_timeout)
        {
            let filters = state.filters.clone();
            drop(state);
            prune(&docker, &filters);
            return;
        }
    }
}
