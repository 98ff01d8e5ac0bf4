//! The broker over TCP and the Unix socket, with real connections.
use super::*;
use serde_json::json;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A broker with TCP on, in a temporary run directory, without a limit.
fn tcp_server() -> (tempfile::TempDir, RateServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RateServer::start(&RunDir::new(dir.path()), None, Some("127.0.0.1"), 1 << 20)
        .expect("start the broker");
    (dir, server)
}

fn tcp_of(server: &RateServer) -> (String, String) {
    let tcp = server.tcp.as_ref().expect("TCP is on");
    (tcp.address.clone(), tcp.secret.clone())
}

fn connect(address: &str) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(address).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    // A broken broker fails the test instead of hanging it.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    BufReader::new(stream)
}

/// Sends `request`; the reply, or `None` when the broker hung up.
fn ask<S: Read + Write>(connection: &mut BufReader<S>, request: &str) -> Option<Value> {
    // One write, as clients do: with Nagle off, two would be two packets.
    connection
        .get_mut()
        .write_all(format!("{request}\n").as_bytes())
        .expect("send");
    let mut line = String::new();
    match connection.read_line(&mut line).expect("read") {
        0 => None,
        _ => Some(serde_json::from_str(&line).expect("a JSON reply")),
    }
}

/// True once the broker has closed the connection.
fn closed<S: Read + Write>(connection: &mut BufReader<S>) -> bool {
    let mut rest = String::new();
    matches!(connection.read_line(&mut rest), Ok(0))
}

const PERMIT: &str = r#"{"op":"permit","tokens":5,"agent":"a"}"#;

#[test]
fn tcp_with_the_right_secret_gets_permits() {
    let (_dir, server) = tcp_server();
    let (address, secret) = tcp_of(&server);
    let mut connection = connect(&address);
    let hello = json!({"op": "hello", "secret": secret}).to_string();
    assert_eq!(ask(&mut connection, &hello), Some(json!({"ok": true})));
    for _ in 0..3 {
        let reply = ask(&mut connection, PERMIT).expect("a reply");
        assert_eq!(reply["ok"], true, "{reply}");
        assert!(reply["waited_ms"].is_number(), "{reply}");
    }
}

#[test]
fn tcp_with_a_wrong_secret_is_refused_and_closed() {
    let (_dir, server) = tcp_server();
    let (address, secret) = tcp_of(&server);
    // Same length, last digit changed.
    let mut wrong = secret[..31].to_owned();
    wrong.push(if secret.ends_with('0') { '1' } else { '0' });
    for hello in [
        json!({"op": "hello", "secret": wrong}),
        json!({"op": "hello", "secret": ""}),
        json!({"op": "hello"}),
    ] {
        let mut connection = connect(&address);
        let reply = ask(&mut connection, &hello.to_string()).expect("a reply");
        assert_eq!(reply["ok"], false, "{reply}");
        assert!(reply["error"].is_string(), "{reply}");
        assert!(closed(&mut connection), "closed after {hello}");
    }
}

#[test]
fn tcp_without_a_hello_is_refused_and_closed() {
    let (_dir, server) = tcp_server();
    let (address, _) = tcp_of(&server);
    let mut connection = connect(&address);
    let reply = ask(&mut connection, PERMIT).expect("a reply");
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(closed(&mut connection));
    let mut connection = connect(&address);
    let reply = ask(&mut connection, "not json").expect("a reply");
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(closed(&mut connection));
    // Nothing granted: rate.log is made at its first line.
    assert!(!_dir.path().join("rate.log").exists());
}

#[test]
fn the_unix_socket_needs_no_hello_but_takes_one() {
    let (_dir, server) = tcp_server();
    let stream = UnixStream::connect(server.path()).expect("connect");
    let mut connection = BufReader::new(stream);
    assert_eq!(ask(&mut connection, PERMIT).expect("a reply")["ok"], true);
    // Whatever the secret: the socket's mode already keeps others out.
    let hello = r#"{"op":"hello","secret":"anything"}"#;
    assert_eq!(ask(&mut connection, hello), Some(json!({"ok": true})));
    assert_eq!(ask(&mut connection, PERMIT).expect("a reply")["ok"], true);
}

#[test]
fn agents_get_the_tcp_address_and_secret_and_broker_json_holds_them() {
    let (dir, server) = tcp_server();
    let (address, secret) = tcp_of(&server);
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert_eq!(secret.len(), 32);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
    assert_eq!(
        server.agent_env(),
        [
            (
                "NIGHTSHIFT_SOCKET".to_owned(),
                OsString::from(format!("tcp:{address}"))
            ),
            ("NIGHTSHIFT_SECRET".to_owned(), OsString::from(&secret)),
        ]
    );
    let file = dir.path().join("broker.json");
    let mode = std::fs::metadata(&file)
        .expect("broker.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("JSON");
    assert_eq!(written, json!({"tcp": address, "secret": secret}));
    drop(server);
    assert!(!file.exists(), "broker.json goes with the broker");
}

#[test]
fn without_tcp_agents_get_the_socket_path_and_there_is_no_broker_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RateServer::start(&RunDir::new(dir.path()), None, None, 1 << 20).expect("start");
    assert_eq!(
        server.agent_env(),
        [(
            "NIGHTSHIFT_SOCKET".to_owned(),
            dir.path().join("nightshift.sock").into_os_string()
        )]
    );
    assert!(!dir.path().join("broker.json").exists());
}

#[test]
fn an_ipv6_host_goes_in_brackets() {
    assert_eq!(host_and_port("::1", 80), "[::1]:80");
    assert_eq!(host_and_port("[::1]", 80), "[::1]:80");
    assert_eq!(host_and_port("node1", 80), "node1:80");
    assert!(!RateServer::host_name().is_empty());
}

/// Not a check: prints the median permit round trip over each transport
/// (`cargo nextest run -p supervisor round_trip --no-capture`). The two
/// take turns, so both see the same machine.
#[test]
fn round_trip_over_tcp_and_unix() {
    fn time<S: Read + Write>(connection: &mut BufReader<S>, times: &mut Vec<f64>) {
        let asked = Instant::now();
        let reply = ask(connection, PERMIT).expect("a reply");
        times.push(asked.elapsed().as_secs_f64() * 1e6);
        assert_eq!(reply["ok"], true);
    }
    fn median(mut times: Vec<f64>) -> f64 {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    }
    let (_dir, server) = tcp_server();
    let (address, secret) = tcp_of(&server);
    let mut tcp = connect(&address);
    let hello = json!({"op": "hello", "secret": secret}).to_string();
    assert_eq!(ask(&mut tcp, &hello), Some(json!({"ok": true})));
    let mut unix = BufReader::new(UnixStream::connect(server.path()).expect("connect"));
    let (mut tcp_times, mut unix_times) = (Vec::new(), Vec::new());
    for _ in 0..5000 {
        time(&mut tcp, &mut tcp_times);
        time(&mut unix, &mut unix_times);
    }
    println!(
        "permit round trip, median of 5000: TCP {:.1} us, Unix socket {:.1} us",
        median(tcp_times),
        median(unix_times)
    );
}

/// A broker on the Unix socket only, without a limit.
fn unix_server() -> (tempfile::TempDir, RateServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RateServer::start(&RunDir::new(dir.path()), None, None, 1 << 20).expect("start");
    (dir, server)
}

fn unix_client(server: &RateServer) -> BufReader<UnixStream> {
    let stream = UnixStream::connect(server.path()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    BufReader::new(stream)
}

fn waited_ms(reply: Option<Value>) -> f64 {
    let reply = reply.expect("a reply");
    assert_eq!(reply["ok"], true, "{reply}");
    reply["waited_ms"].as_f64().expect("waited_ms")
}

#[test]
fn a_backed_off_key_waits_while_another_key_is_granted() {
    let (dir, server) = unix_server();
    let (key_a, key_b) = ("http://a/v1 A_KEY", "http://b/v1 B_KEY");
    let permit =
        |key: &str| json!({"op": "permit", "tokens": 5, "agent": "x", "key": key}).to_string();
    let mut a = unix_client(&server);
    let mut b = unix_client(&server);
    for (client, key) in [(&mut a, key_a), (&mut b, key_b)] {
        let learned = json!({"op": "learned", "key": key, "agent": "x",
            "requests": {"limit": 6000, "remaining": 5999, "reset_seconds": 0.01}});
        assert_eq!(ask(client, &learned.to_string()), Some(json!({"ok": true})));
    }
    let backoff = json!({"op": "backoff", "seconds": 1, "agent": "x", "key": key_a});
    let paused = ask(&mut a, &backoff.to_string()).expect("a reply");
    assert_eq!(paused["paused_ms"], 1000.0, "{paused}");
    let waiting = std::thread::spawn(move || waited_ms(ask(&mut a, &permit(key_a))));
    for _ in 0..5 {
        assert!(
            waited_ms(ask(&mut b, &permit(key_b))) < 500.0,
            "key B is not paused"
        );
    }
    assert!(
        waited_ms(ask(&mut b, PERMIT)) < 500.0,
        "nor are permits naming no key"
    );
    let waited = waiting.join().expect("the waiting client");
    assert!(waited >= 900.0, "key A waited out its pause: {waited} ms");
    // Stopped, the broker has written every line (it writes them together).
    drop(server);
    let log = std::fs::read_to_string(dir.path().join("rate.log")).expect("rate.log");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let grants = |key: Option<&str>| {
        lines
            .iter()
            .filter(|l| l["op"] == "grant" && l["key"].as_str() == key)
            .count()
    };
    assert_eq!(
        (grants(Some(key_a)), grants(Some(key_b)), grants(None)),
        (1, 5, 1)
    );
    let backoff = lines.iter().find(|l| l["op"] == "backoff").expect("logged");
    assert_eq!(backoff["key"], key_a);
    assert_eq!(
        backoff["requests_per_minute"], 3000.0,
        "the pace halved: {backoff}"
    );
    assert!(lines
        .iter()
        .any(|l| l["op"] == "learned" && l["key"] == key_b));
}

#[test]
fn a_paused_broker_holds_every_permit_until_it_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server =
        Arc::new(RateServer::start(&RunDir::new(dir.path()), None, None, 1 << 20).expect("start"));
    server.set_paused(true);
    let path = server.path().to_path_buf();
    let asker = std::thread::spawn(move || {
        let stream = UnixStream::connect(&path).expect("connect");
        let mut connection = BufReader::new(stream);
        let keyed = r#"{"op":"permit","tokens":5,"agent":"a","key":"k"}"#;
        (
            ask(&mut connection, PERMIT),
            ask(&mut connection, keyed),
            Instant::now(),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!asker.is_finished(), "no permit while paused");
    let released = Instant::now();
    server.set_paused(false);
    let (unkeyed, keyed, granted) = asker.join().expect("the asking thread");
    assert_eq!(unkeyed.map(|r| r["ok"].clone()), Some(json!(true)));
    assert_eq!(keyed.map(|r| r["ok"].clone()), Some(json!(true)));
    assert!(granted >= released);
}

#[test]
fn a_permit_whose_asker_hung_up_is_given_up_not_granted() {
    let (dir, server) = unix_server();
    server.set_paused(true);
    // Agent a asks, then dies before its permit could be granted.
    let mut gone = unix_client(&server);
    gone.get_mut()
        .write_all(b"{\"op\":\"permit\",\"tokens\":5,\"agent\":\"a\"}\n")
        .expect("send");
    std::thread::sleep(Duration::from_millis(200));
    drop(gone);
    std::thread::sleep(Duration::from_millis(200));
    let path = server.path().to_path_buf();
    let asker = std::thread::spawn(move || {
        let stream = UnixStream::connect(&path).expect("connect");
        ask(
            &mut BufReader::new(stream),
            r#"{"op":"permit","tokens":5,"agent":"b"}"#,
        )
    });
    std::thread::sleep(Duration::from_millis(200));
    server.set_paused(false);
    let reply = asker.join().expect("the asking thread").expect("a reply");
    assert_eq!(reply["ok"], true, "{reply}");
    // Stopped, the broker has written every line (it writes them together).
    drop(server);
    let log = std::fs::read_to_string(dir.path().join("rate.log")).expect("rate.log");
    let granted: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["op"] == "grant")
        .map(|l| l["agent"].clone())
        .collect();
    assert_eq!(granted, [json!("b")], "only the agent still there");
}

#[test]
fn a_quiet_report_gets_no_reply_and_the_next_request_gets_its_own() {
    let (_dir, server) = tcp_server();
    let stream = UnixStream::connect(server.path()).expect("connect");
    let mut connection = BufReader::new(stream);
    assert_eq!(ask(&mut connection, PERMIT).expect("a reply")["ok"], true);
    // Two quiet reports, then a permit: the one line read back is the
    // permit's (a reply to a report would be read here instead).
    connection
        .get_mut()
        .write_all(b"{\"op\":\"report\",\"tokens\":1,\"quiet\":true}\n{\"op\":\"report\",\"tokens\":2,\"quiet\":true}\n")
        .expect("send");
    let reply = ask(
        &mut connection,
        r#"{"op":"permit","tokens":1,"agent":"after"}"#,
    )
    .expect("a reply");
    assert_eq!(reply["ok"], true, "{reply}");
    // A report that is not quiet is answered, as `nightshift permit` expects.
    assert_eq!(
        ask(&mut connection, r#"{"op":"report","tokens":1}"#),
        Some(json!({"ok": true}))
    );
}
