//! A small LLM API server for what LiteLLM cannot be made to do: answer 500s,
//! hang, send garbage, drop connections, reject keys, send per-key rate-limit
//! headers, and speak Anthropic's Messages API.
//!
//! ```text
//! fault_server --log FILE [--mode M[,M…]] [--good-key K[,K…]] [--rpm N]
//!              [--hang 30s] [--delay 0ms] [--lifetime 300s] [--item-prefix item-]
//!              [--reply text|json]
//! ```
//! Modes: `error500:N` (the first N requests of each item answer 500), `hang`
//! (an item's request gets no answer for `--hang`), `reset` (an item's request
//! is read, then the connection is closed without an answer), `garbled` (a 200
//! whose body is not JSON). Each item meets each fault mode once, in that
//! order, one per request, then gets its answer: `--mode error500:1,hang`
//! gives an item a 500, then a hang, then a reply.
//! `unauthorized` (401 unless the key is one of `--good-key`), `ratelimit` (per-key
//! rate-limit headers on every answer, 429 with retry-after past `--rpm` a
//! minute), `anthropic` (only `POST …/messages` is served, with
//! `anthropic-ratelimit-*` headers), `cache` (Anthropic's prompt caching:
//! a system block marked cache_control is written by the requests that find
//! it unwritten, read by those after the first writer's answer went out).
//! Without modes: OpenAI-shaped chat
//! completions (`POST …/chat/completions`) naming the item they answer.
//!
//! The provider batch APIs of both shapes are served too (`fault_server/batch.rs`:
//! `--batch-polls N`, `--batch-expire ITEM[,…]`, `--batch-error ITEM[,…]`).
//!
//! It binds 127.0.0.1 on a free port and prints the port as its first line.
//! Every request appends one JSON line to the log: path, item (the first
//! `--item-prefix` id found in the body), key (its last 4 characters, never
//! the key), status (null when no answer was sent) and the fault played.
//! It exits by itself after `--lifetime`, so a test that dies cannot leave it
//! behind.

// A binary's root finds modules beside it, not in a folder named after it.
#[path = "fault_server/answer.rs"]
mod answer;
#[path = "fault_server/batch.rs"]
mod batch;
#[path = "fault_server/cache.rs"]
mod cache;
#[path = "fault_server/http.rs"]
mod http;

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use answer::{Api, Window};
use http::{Answer, ReadError, Request};
use nightshift_tests::agent_kit::{fail, or_fail, Args};
use serde_json::{json, Value};

/// The rate-limit window: limits are per minute, like the APIs'.
const MINUTE: Duration = Duration::from_secs(60);

/// What the command line asked for.
struct Config {
    error500: u32,
    hang: Option<Duration>,
    garbled: bool,
    reset: bool,
    /// `unauthorized` mode: the keys answered (others get 401).
    good_keys: Vec<String>,
    /// `ratelimit` mode: requests a minute per key.
    rpm: Option<u32>,
    anthropic: bool,
    /// `truncate` mode: every reply stopped at max_tokens.
    truncate: bool,
    item_prefix: String,
    json_reply: bool,
    /// Every answer waits this long: a slow model, so a run can be caught mid-way.
    delay: Duration,
    /// `cache` mode: prompt caching played.
    cache: bool,
}

/// What the server remembers between requests.
#[derive(Default)]
struct State {
    /// Requests seen per item id (that passed the key and rate checks).
    attempts: HashMap<String, u32>,
    /// When each key's recent requests came, for the per-minute window.
    windows: HashMap<String, VecDeque<Instant>>,
    serial: u64,
    cache: cache::PromptCache,
}

struct Server {
    config: Config,
    state: Mutex<State>,
    log: Mutex<File>,
    started: Instant,
    batches: batch::Batches,
}

/// A fault an item's request may meet.
#[derive(Clone, Copy)]
enum Fault {
    Error500,
    Hang(Duration),
    Reset,
    Garbled,
}

/// What to do with one request.
enum Outcome {
    Answer(Answer),
    /// Hold the request unanswered this long, then close.
    Hang(Duration),
    /// Close the connection without a word.
    Reset,
}

fn main() {
    let args = Args::parse(
        &[],
        &[
            "--log",
            "--mode",
            "--good-key",
            "--rpm",
            "--hang",
            "--lifetime",
            "--item-prefix",
            "--reply",
            "--delay",
            "--batch-polls",
            "--batch-expire",
            "--batch-error",
        ],
    );
    let config = config(&args);
    let log_path = args
        .text("--log")
        .unwrap_or_else(|| fail("--log FILE is required"));
    let log = or_fail(
        OpenOptions::new().create(true).append(true).open(log_path),
        &format!("open the request log {log_path}"),
    );
    let lifetime = args
        .text("--lifetime")
        .map_or(Duration::from_secs(300), |t| duration(t, "--lifetime"));

    let listener = or_fail(TcpListener::bind("127.0.0.1:0"), "bind 127.0.0.1");
    let port = or_fail(listener.local_addr(), "read the bound port").port();
    let mut stdout = std::io::stdout();
    or_fail(writeln!(stdout, "{port}"), "print the port");
    or_fail(stdout.flush(), "print the port");

    std::thread::spawn(move || {
        std::thread::sleep(lifetime);
        eprintln!("fault_server: lifetime of {lifetime:?} over, exiting");
        std::process::exit(0);
    });

    let server = Arc::new(Server {
        config,
        state: Mutex::new(State::default()),
        log: Mutex::new(log),
        started: Instant::now(),
        batches: batch::Batches::new(
            args.value("--batch-polls").unwrap_or(1),
            items(&args, "--batch-expire"),
            items(&args, "--batch-error"),
        ),
    });
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let server = Arc::clone(&server);
                std::thread::spawn(move || server.serve(stream));
            }
            Err(e) => eprintln!("fault_server: accept: {e}"),
        }
    }
}

fn config(args: &Args) -> Config {
    let mut config = Config {
        error500: 0,
        hang: None,
        garbled: false,
        reset: false,
        good_keys: args
            .text("--good-key")
            .map(|keys| keys.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        rpm: None,
        anthropic: false,
        truncate: false,
        cache: false,
        item_prefix: args.text("--item-prefix").unwrap_or("item-").to_owned(),
        delay: args
            .text("--delay")
            .map_or(Duration::ZERO, |t| duration(t, "--delay")),
        json_reply: match args.text("--reply") {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => fail(format!("--reply is text or json, not {other}")),
        },
    };
    let hang = args
        .text("--hang")
        .map_or(Duration::from_secs(30), |t| duration(t, "--hang"));
    let modes = args.text("--mode").unwrap_or_default();
    for mode in modes.split(',').filter(|m| !m.is_empty()) {
        match mode.split_once(':') {
            Some(("error500", n)) => {
                config.error500 = n
                    .parse()
                    .unwrap_or_else(|_| fail(format!("error500:N needs a count, not {n}")));
            }
            None if mode == "hang" => config.hang = Some(hang),
            None if mode == "garbled" => config.garbled = true,
            None if mode == "reset" => config.reset = true,
            None if mode == "anthropic" => config.anthropic = true,
            None if mode == "truncate" => config.truncate = true,
            None if mode == "cache" => config.cache = true,
            None if mode == "unauthorized" => {
                if config.good_keys.is_empty() {
                    fail("mode unauthorized needs --good-key K");
                }
            }
            None if mode == "ratelimit" => {
                config.rpm = Some(
                    args.value("--rpm")
                        .unwrap_or_else(|| fail("mode ratelimit needs --rpm N")),
                );
            }
            _ => fail(format!(
                "unknown mode {mode} (error500:N, hang, garbled, reset, unauthorized, ratelimit, anthropic, truncate, cache)"
            )),
        }
    }
    if !modes.split(',').any(|m| m == "unauthorized") {
        config.good_keys.clear();
    }
    config
}

/// A comma-separated list of item ids.
fn items(args: &Args, name: &str) -> Vec<String> {
    args.text(name)
        .map(|list| list.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// "300s", "1500ms", "2m".
fn duration(text: &str, what: &str) -> Duration {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number.parse().unwrap_or_else(|_| {
        fail(format!(
            "{what}: cannot read {text:?} (e.g. 30s, 500ms, 2m)"
        ))
    });
    match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => fail(format!("{what}: unknown unit in {text:?} (ms, s, m)")),
    }
}

impl Server {
    /// Answers the requests of one connection until the client closes it.
    fn serve(&self, stream: TcpStream) {
        let mut writer = match stream.try_clone() {
            Ok(writer) => writer,
            Err(e) => return eprintln!("fault_server: clone a connection: {e}"),
        };
        let mut reader = BufReader::new(stream);
        loop {
            let request = match http::read_request(&mut reader) {
                Ok(request) => request,
                Err(ReadError::Closed) => return,
                Err(ReadError::Bad(why)) => return eprintln!("fault_server: {why}"),
            };
            let keep_alive = request.keep_alive();
            let (outcome, entry) = self.decide(&request);
            self.log(entry);
            match outcome {
                Outcome::Answer(answer) => {
                    std::thread::sleep(self.config.delay);
                    if let Err(e) = http::write_answer(&mut writer, &answer, keep_alive) {
                        return eprintln!("fault_server: write an answer: {e}");
                    }
                    if !keep_alive {
                        return;
                    }
                }
                Outcome::Hang(how_long) => {
                    std::thread::sleep(how_long);
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
                Outcome::Reset => {
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }

    /// What to answer, and the log line saying so.
    fn decide(&self, request: &Request) -> (Outcome, Value) {
        let prefix = &self.config.item_prefix;
        let routed = self
            .batches
            .route(request, &|text| find_item(text, prefix), &|api, body| {
                self.batch_reply(api, body)
            });
        if let Some((answer, lines)) = routed {
            lines.into_iter().for_each(|line| self.log(line));
            let entry = json!({"method": request.method, "path": request.path, "item": null,
                               "status": answer.status, "fault": "batch"});
            return (Outcome::Answer(answer), entry);
        }
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let item = find_item(
            &String::from_utf8_lossy(&request.body),
            &self.config.item_prefix,
        );
        let key = request.api_key().unwrap_or_default().to_owned();
        let mut entry = json!({
            "t_ms": u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "method": request.method,
            "path": request.path,
            "item": item,
            "key": (!key.is_empty()).then(|| last_four(&key)),
            "anthropic_version": request.header("anthropic-version"),
            "status": null,
            "fault": null,
        });
        let (outcome, fault) = self.outcome(request, &body, item.as_deref(), &key);
        if let Outcome::Answer(answer) = &outcome {
            entry["status"] = answer.status.into();
        }
        entry["fault"] = fault.into();
        (outcome, entry)
    }

    fn outcome(
        &self,
        request: &Request,
        body: &Value,
        item: Option<&str>,
        key: &str,
    ) -> (Outcome, Option<&'static str>) {
        let config = &self.config;
        let api = match Api::of_path(&request.path) {
            Some(api)
                if request.method == "POST" && (api == Api::Anthropic) == config.anthropic =>
            {
                api
            }
            _ => {
                let api = if config.anthropic {
                    Api::Anthropic
                } else {
                    Api::OpenAi
                };
                let answer = answer::error(api, 404, "not_found_error", "no such route here");
                return (Outcome::Answer(answer), None);
            }
        };
        if !config.good_keys.is_empty() && !config.good_keys.iter().any(|good| good == key) {
            let (kind, message) = match api {
                Api::OpenAi => ("invalid_api_key", "Incorrect API key provided."),
                Api::Anthropic => ("authentication_error", "invalid x-api-key"),
            };
            let answer = answer::error(api, 401, kind, message);
            return (Outcome::Answer(answer), Some("unauthorized"));
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.serial += 1;
        let serial = state.serial;
        // Anthropic always sends its limit headers; OpenAI-style servers do
        // in ratelimit mode.
        let window = match (config.rpm, config.anthropic) {
            (Some(rpm), _) => Some(take_slot(&mut state, key, rpm)),
            (None, true) => Some(take_slot(&mut state, key, 1000)),
            (None, false) => None,
        };
        if let Some(Err((window, retry_after))) = &window {
            let message = "Rate limit reached for requests";
            let answer = answer::error(api, 429, rate_limit_kind(api), message)
                .with_header("retry-after", retry_after.as_secs().max(1))
                .with_header("retry-after-ms", retry_after.as_millis());
            let answer = answer::with_limits(answer, api, window);
            return (Outcome::Answer(answer), Some("ratelimit"));
        }
        let attempt = item.map_or(0, |item| {
            let seen = state.attempts.entry(item.to_owned()).or_insert(0);
            *seen += 1;
            *seen - 1
        });
        let cache_use = if config.cache {
            state.cache.serve(body, config.delay)
        } else {
            None
        };
        drop(state);
        let limited = |answer: Answer| match &window {
            Some(Ok(window)) => answer::with_limits(answer, api, window),
            _ => answer,
        };
        // Faults are played in this order, one per request of an item: the
        // N 500s, then the hang, the reset, the garbled body; then answers.
        let mut faults = vec![Fault::Error500; config.error500 as usize];
        faults.extend(config.hang.map(Fault::Hang));
        faults.extend(config.reset.then_some(Fault::Reset));
        faults.extend(config.garbled.then_some(Fault::Garbled));
        match item.and(faults.get(attempt as usize)) {
            Some(Fault::Error500) => {
                let answer =
                    answer::error(api, 500, server_error_kind(api), "The server had an error");
                return (Outcome::Answer(limited(answer)), Some("error500"));
            }
            Some(Fault::Hang(how_long)) => return (Outcome::Hang(*how_long), Some("hang")),
            Some(Fault::Reset) => return (Outcome::Reset, Some("reset")),
            Some(Fault::Garbled) => {
                let answer = Answer {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: b"{\"choices\": [{\"message\": <<garbled>>".to_vec(),
                };
                return (Outcome::Answer(limited(answer)), Some("garbled"));
            }
            None => {}
        }
        let item = item.unwrap_or("no item");
        let text = if config.json_reply {
            json!({"item": item, "answer": format!("reply to {item}")}).to_string()
        } else {
            format!("reply to {item}")
        };
        let answer = answer::success(
            api,
            serial,
            answer::requested_model(body),
            &text,
            config.truncate,
            cache_use,
        );
        (Outcome::Answer(limited(answer)), None)
    }

    /// The answer body a batched request gets: what online mode would.
    fn batch_reply(&self, api: Api, body: &Value) -> Value {
        let item = find_item(&body.to_string(), &self.config.item_prefix);
        let item = item.as_deref().unwrap_or("no item");
        let text = if self.config.json_reply {
            json!({"item": item, "answer": format!("reply to {item}")}).to_string()
        } else {
            format!("reply to {item}")
        };
        let model = answer::requested_model(body);
        let answer = answer::success(api, 0, model, &text, self.config.truncate, None);
        serde_json::from_slice(&answer.body).unwrap_or(Value::Null)
    }

    fn log(&self, entry: Value) {
        let mut line = entry.to_string();
        line.push('\n');
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        // One write per line: readers never see half a line from two requests.
        if let Err(e) = log.write_all(line.as_bytes()) {
            fail(format!("append to the request log: {e}"));
        }
    }
}

/// Counts a request against `key`'s window: Ok with the window after it, or
/// Err with the window and how long until a slot frees when it is full.
fn take_slot(state: &mut State, key: &str, rpm: u32) -> Result<Window, (Window, Duration)> {
    let now = Instant::now();
    let times = state.windows.entry(key.to_owned()).or_default();
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= MINUTE)
    {
        times.pop_front();
    }
    let used = u32::try_from(times.len()).unwrap_or(u32::MAX);
    let until_oldest_leaves = times.front().map_or(Duration::ZERO, |t| {
        MINUTE.saturating_sub(now.duration_since(*t))
    });
    if used >= rpm {
        let window = Window {
            limit: rpm,
            remaining: 0,
            reset: MINUTE,
        };
        return Err((window, until_oldest_leaves));
    }
    times.push_back(now);
    Ok(Window {
        limit: rpm,
        remaining: rpm - used - 1,
        reset: MINUTE,
    })
}

fn rate_limit_kind(api: Api) -> &'static str {
    match api {
        Api::OpenAi => "rate_limit_exceeded",
        Api::Anthropic => "rate_limit_error",
    }
}

fn server_error_kind(api: Api) -> &'static str {
    match api {
        Api::OpenAi => "server_error",
        Api::Anthropic => "api_error",
    }
}

/// The first `prefix` followed by digits in `text`: the item a prompt is about.
fn find_item(text: &str, prefix: &str) -> Option<String> {
    text.match_indices(prefix).find_map(|(at, _)| {
        let digits: String = text[at + prefix.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (!digits.is_empty()).then(|| format!("{prefix}{digits}"))
    })
}

/// A key as the log may show it: its last four characters, or only its
/// length when the key is so short that four characters would be most of it.
fn last_four(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return format!("<{} chars>", chars.len());
    }
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("…{tail}")
}
