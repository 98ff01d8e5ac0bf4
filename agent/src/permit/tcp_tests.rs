//! The TCP side of the client (the Unix side is in tests.rs).
use super::*;
use serde_json::json;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread;

/// A broker on a loopback port: serves `connections` connections in
/// turn, each for at most `lines` lines. A connection must say hello
/// with `secret` first; the rest is granted. Returns the lines it was sent.
fn broker(
    secret: &'static str,
    connections: usize,
    lines: usize,
) -> (String, thread::JoinHandle<Vec<Value>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let server = thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..connections {
            let Ok((stream, _)) = listener.accept() else {
                break;
            };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            for n in 0..lines {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let refuse = n == 0 && request != json!({"op": "hello", "secret": secret});
                seen.push(request);
                let reply: &[u8] = if refuse {
                    b"{\"ok\":false,\"error\":\"wrong secret\"}\n"
                } else {
                    b"{\"ok\":true,\"waited_ms\":2.5}\n"
                };
                if reader.get_mut().write_all(reply).is_err() || refuse {
                    break;
                }
            }
        }
        seen
    });
    (address, server)
}

fn tcp(address: &str, secret: Option<&str>) -> Option<BrokerAddress> {
    let socket = format!("tcp:{address}");
    Some(BrokerAddress::parse(
        OsStr::new(&socket),
        secret.map(str::to_owned),
    ))
}

#[test]
fn a_socket_value_is_a_path_or_a_tcp_address() {
    assert_eq!(
        BrokerAddress::parse(OsStr::new("/run/x.sock"), Some("s".into())),
        BrokerAddress::Unix(PathBuf::from("/run/x.sock"))
    );
    assert_eq!(
        BrokerAddress::parse(OsStr::new("tcp:node1:4000"), Some("s".into())),
        BrokerAddress::Tcp {
            address: "node1:4000".into(),
            secret: Some("s".into())
        }
    );
}

#[test]
fn a_tcp_connection_says_hello_with_the_secret_first_and_again_on_reconnecting() {
    // The first connection hangs up after the hello and one permit:
    // the second says hello again before the request is sent again.
    let (address, server) = broker("s3cret", 2, 2);
    let mut permits = Permits::at(tcp(&address, Some("s3cret")), "a");
    assert_eq!(permits.permit(7), Some(2.5));
    assert_eq!(permits.permit(8), Some(2.5));
    assert!(permits.is_on());
    drop(permits);
    let hello = json!({"op": "hello", "secret": "s3cret"});
    assert_eq!(
        server.join().expect("broker thread"),
        [
            hello.clone(),
            json!({"op": "permit", "tokens": 7, "agent": "a"}),
            hello,
            json!({"op": "permit", "tokens": 8, "agent": "a"}),
        ]
    );
}

#[test]
fn a_refused_hello_turns_permits_off() {
    let (address, server) = broker("s3cret", 1, 2);
    let mut permits = Permits::at(tcp(&address, Some("wrong")), "a");
    assert_eq!(permits.permit(7), None);
    assert!(!permits.is_on());
    assert_eq!(
        server.join().expect("broker thread"),
        [json!({"op": "hello", "secret": "wrong"})]
    );
}

#[test]
fn without_a_secret_permits_are_off() {
    let mut permits = Permits::at(tcp("127.0.0.1:9", None), "a");
    assert_eq!(permits.permit(7), None);
    assert!(!permits.is_on());
}
