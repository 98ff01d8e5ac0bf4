//! Rate-limit permits from the supervisor's broker, at the address named by
//! NIGHTSHIFT_SOCKET: a Unix socket path, or `tcp:HOST:PORT` when the agent
//! may run on another host (Slurm) — then the connection first says hello
//! with NIGHTSHIFT_SECRET. One JSON request per line, one reply line each,
//! over one connection per worker (item in flight) kept for the agent's life;
//! the lines themselves are `shared::broker`'s. Without the variable, or when
//! the broker cannot be reached, the agent works without permits: a missing
//! broker must slow nothing down and fail no item.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use shared::broker::{
    exchange, ExchangeError, LearnedLimits, Reply, Request, LIMITED_FILE, RUN_DIR_VAR,
};

mod connection;

pub use connection::BrokerAddress;
use connection::{answered, connect, BrokerError, Connection};
pub use shared::broker::{SECRET_VAR, SOCKET_VAR};

/// What one call asks a permit for: its estimated tokens, the USD it may
/// cost at most, and the cacheable prefix it carries (`shared::broker::prefix_id`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Need {
    pub tokens: u64,
    pub cost: Option<f64>,
    pub prefix: Option<String>,
}

/// What a permit request came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Grant {
    /// Granted after waiting this many milliseconds, for `key` when the
    /// broker chose one of a pool.
    Granted { waited_ms: f64, key: Option<String> },
    /// No broker: the call goes ahead without a permit.
    Off,
    /// The run's budget cannot cover the call (the broker's words): it is
    /// not made, and the agent stops.
    Spent(String),
}

/// When an agent asks the broker for permits: a run without limits sends
/// the broker nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitPolicy {
    /// Before every call: the job sets limits (`[rate]`, a budget), or the
    /// broker chooses the key of a pool.
    Always,
    /// Before every call, until an answer comes back that announces no
    /// rate limit while none was ever seen (a local server: vLLM, llama.cpp,
    /// Ollama); then as `OnLimit`. An LLM server's first requests start
    /// slowly through the broker, so that no 429 storm greets a real API.
    Probe,
    /// None until a limit shows: a rate-limit answer or an announced limit,
    /// this agent's or (through RUN/rate.limited) another's.
    OnLimit,
}

/// What every client of one agent shares: the broker, and whether it has
/// been given up on (then no client bothers it again).
#[derive(Debug)]
struct Broker {
    address: Option<BrokerAddress>,
    agent: String,
    gone: AtomicBool,
    policy: PermitPolicy,
    /// Whether calls take permits now (see `PermitPolicy`).
    asking: AtomicBool,
    /// Under `PermitPolicy::Probe`, held by the one call that probes: the
    /// others wait for its answer, not for permits of their own (the broker
    /// starts a key slowly, and once the answer shows no limit they need none).
    probe: Arc<tokio::sync::Mutex<()>>,
    /// A limit showed: permits from now on, whatever the policy.
    limited: AtomicBool,
    /// RUN/rate.limited, from NIGHTSHIFT_RUN_DIR.
    limited_file: Option<PathBuf>,
    /// When `limited_file` was last looked for, in milliseconds since
    /// `born` (plus one: 0 is never): at most every `LIMITED_FILE_EVERY`,
    /// not before every call (a stat per request was the agent's largest
    /// cost past the request itself, at thousands of requests a second).
    limited_checked: AtomicU64,
    born: Instant,
}

/// How often an agent that takes no permits looks whether another agent of
/// the run saw a limit (RUN/rate.limited).
const LIMITED_FILE_EVERY: Duration = Duration::from_millis(50);

/// The agent's side of the broker protocol, for one worker: each worker has
/// its own client and connection, so several items in flight can wait for
/// their permits at once and the broker sees every request.
pub struct Permits {
    broker: Arc<Broker>,
    connection: Option<Connection>,
}

impl Permits {
    /// Connects lazily, at the first request: an agent whose items are all
    /// saved already never bothers the broker.
    ///
    /// `socket` is NIGHTSHIFT_SOCKET's value; a `tcp:` one takes its secret
    /// from NIGHTSHIFT_SECRET.
    pub fn new(socket: Option<PathBuf>, agent: &str, policy: PermitPolicy) -> Self {
        let secret = std::env::var(SECRET_VAR).ok();
        Self::with_policy(
            socket.map(|socket| BrokerAddress::parse(socket.as_os_str(), secret)),
            agent,
            policy,
        )
    }

    /// Permits from the broker at `broker` (`None`: permits are off).
    pub fn at(broker: Option<BrokerAddress>, agent: &str) -> Self {
        Self::with_policy(broker, agent, PermitPolicy::Always)
    }

    /// Permits from the broker at `broker`, asked as `policy` says.
    pub fn with_policy(broker: Option<BrokerAddress>, agent: &str, policy: PermitPolicy) -> Self {
        Self {
            broker: Arc::new(Broker {
                gone: AtomicBool::new(broker.is_none()),
                address: broker,
                agent: agent.to_owned(),
                policy,
                asking: AtomicBool::new(policy != PermitPolicy::OnLimit),
                probe: Arc::default(),
                limited: AtomicBool::new(false),
                limited_file: std::env::var_os(RUN_DIR_VAR)
                    .map(|run| PathBuf::from(run).join(LIMITED_FILE)),
                limited_checked: AtomicU64::new(0),
                born: Instant::now(),
            }),
            connection: None,
        }
    }

    /// A client for another worker: the same broker, a connection of its own.
    pub fn another(&self) -> Self {
        Self {
            broker: Arc::clone(&self.broker),
            connection: None,
        }
    }

    /// Whether calls take permits now: once a limit shows, for good.
    fn asking(&self) -> bool {
        if self.broker.asking.load(Ordering::Relaxed) {
            return true;
        }
        let limited = self
            .broker
            .limited_file
            .as_ref()
            .is_some_and(|f| self.look_now() && f.exists());
        if limited {
            self.limit_shows();
        }
        limited
    }

    /// Whether it is time to look for RUN/rate.limited again (one worker
    /// of the agent looks; the others go on).
    fn look_now(&self) -> bool {
        let broker = &self.broker;
        let now = u64::try_from(broker.born.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = broker.limited_checked.load(Ordering::Relaxed);
        let every = LIMITED_FILE_EVERY.as_millis() as u64;
        (last == 0 || now.saturating_sub(last) >= every)
            && broker
                .limited_checked
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// A limit showed: every call takes a permit from now on.
    fn limit_shows(&self) {
        self.broker.limited.store(true, Ordering::Relaxed);
        self.broker.asking.store(true, Ordering::Relaxed);
    }

    /// An answer came back that announced no rate limit: under
    /// `PermitPolicy::Probe`, while no limit ever showed, calls go on
    /// without permits.
    pub fn no_limit_announced(&self) {
        if self.broker.policy == PermitPolicy::Probe && !self.broker.limited.load(Ordering::Relaxed)
        {
            self.broker.asking.store(false, Ordering::Relaxed);
        }
    }

    /// Whether the next call's permit is asked of a broker (else
    /// `permit_within` answers `Grant::Off` at once, without any exchange).
    pub fn needs_broker(&self) -> bool {
        self.is_on() && self.asking()
    }

    /// While calls probe (`PermitPolicy::Probe`, no limit seen yet, a broker
    /// to ask): the turn to probe, to hold until the call's answer is in.
    /// None: no turn is needed.
    pub fn probe_turn(
        &self,
    ) -> Option<impl std::future::Future<Output = tokio::sync::OwnedMutexGuard<()>> + 'static> {
        let broker = &self.broker;
        let probing = broker.policy == PermitPolicy::Probe
            && broker.asking.load(Ordering::Relaxed)
            && !broker.limited.load(Ordering::Relaxed)
            && self.is_on();
        probing.then(|| Arc::clone(&broker.probe).lock_owned())
    }

    /// Whether requests still go to a broker.
    pub fn is_on(&self) -> bool {
        !self.broker.gone.load(Ordering::Relaxed)
    }

    /// Waits for a permit for `tokens` estimated tokens; the milliseconds
    /// waited, or `None` when no broker granted it.
    pub fn permit(&mut self, tokens: u64) -> Option<f64> {
        self.permit_for(None, tokens)
    }

    /// A permit for a call with API key `key` (see `shared::broker::key_id`):
    /// each key is paced apart, to the limits learned for it.
    pub fn permit_for(&mut self, key: Option<&str>, tokens: u64) -> Option<f64> {
        let keys: Vec<String> = key.into_iter().map(str::to_owned).collect();
        let need = Need {
            tokens,
            ..Need::default()
        };
        match self.permit_within(&keys, &need) {
            Grant::Granted { waited_ms, .. } => Some(waited_ms),
            Grant::Off | Grant::Spent(_) => None,
        }
    }

    /// A permit for a call with one of `keys` (none: the run's shared
    /// permits; several: a pool, of which the broker chooses the key with
    /// the most left) that needs `need`: the broker holds the run's budget,
    /// and refuses the permit when it cannot cover it.
    pub fn permit_within(&mut self, keys: &[String], need: &Need) -> Grant {
        if !self.asking() {
            return Grant::Off;
        }
        let agent = self.broker.agent.clone();
        let (key, keys) = match keys {
            [one] => (Some(one.clone()), Vec::new()),
            many => (None, many.to_vec()),
        };
        match self.request(&Request::Permit {
            tokens: need.tokens,
            agent,
            key,
            cost: need.cost,
            keys,
            prefix: need.prefix.clone(),
        }) {
            Some(reply) if reply.spent => Grant::Spent(reply.reason().to_owned()),
            Some(reply) => Grant::Granted {
                waited_ms: reply.waited_ms.unwrap_or(0.0),
                key: reply.key,
            },
            None => Grant::Off,
        }
    }

    /// Tells the broker the server rejected `key`: no permit chooses it again.
    pub fn rejected(&mut self, key: &str) {
        let agent = self.broker.agent.clone();
        self.request(&Request::Rejected {
            key: key.to_owned(),
            agent,
        });
    }

    /// Tells the broker what a call really used, so it can correct its count
    /// (only for a call that had a permit).
    pub fn report(&mut self, tokens: u64, estimated: u64) {
        self.report_for(None, tokens, estimated);
    }

    /// `report` for a call with API key `key`.
    pub fn report_for(&mut self, key: Option<&str>, tokens: u64, estimated: u64) {
        let need = Need {
            tokens: estimated,
            ..Need::default()
        };
        self.report_spend(key, &need, tokens, None);
    }

    /// Settles the permit of a call that needed `need` and used `tokens`,
    /// costing `cost` USD (None: no price is known).
    pub fn report_spend(&mut self, key: Option<&str>, need: &Need, tokens: u64, cost: Option<f64>) {
        let agent = self.broker.agent.clone();
        // Quiet: the broker settles it without a reply, so a call's permit
        // costs one round trip, not two.
        self.tell(&Request::Report {
            tokens,
            estimated: Some(need.tokens),
            agent,
            key: key.map(str::to_owned),
            cost,
            estimated_cost: need.cost,
            prefix: need.prefix.clone(),
            quiet: true,
        });
    }

    /// Sends a request that has no reply; a broken connection is reopened
    /// once and the request sent again, as for `request`.
    fn tell(&mut self, request: &Request) {
        if !self.is_on() {
            return;
        }
        let Some(broker) = self.broker.address.clone() else {
            return;
        };
        let had_connection = self.connection.is_some();
        let send = |this: &mut Self| -> Result<(), BrokerError> {
            let connection = match &mut this.connection {
                Some(connection) => connection,
                None => this.connection.insert(connect(&broker)?),
            };
            shared::broker::tell(connection, request).map_err(|e| {
                this.connection = None;
                BrokerError::Exchange(ExchangeError::Io(e))
            })
        };
        let result = match send(self) {
            Err(_) if had_connection => send(self),
            other => other,
        };
        if let Err(error) = result {
            self.give_up(&broker, &error);
        }
    }

    /// Asks the broker to pause every agent's permits after a rate-limit
    /// answer (`seconds` 0: the broker's default pause). The milliseconds
    /// paused, or `None` when no broker took it and the agent must wait itself.
    pub fn backoff(&mut self, seconds: f64) -> Option<f64> {
        self.backoff_for(None, seconds)
    }

    /// `backoff` for the permits of API key `key` only.
    pub fn backoff_for(&mut self, key: Option<&str>, seconds: f64) -> Option<f64> {
        // A limit shows: from now on every call of this agent takes a permit.
        self.limit_shows();
        let agent = self.broker.agent.clone();
        let key = key.map(str::to_owned);
        let reply = self.request(&Request::Backoff {
            seconds,
            agent,
            key,
        })?;
        Some(reply.paused_ms.unwrap_or(0.0))
    }

    /// Tells the broker the limits an answer's headers announced for `key`.
    pub fn learned(&mut self, key: &str, limits: LearnedLimits) {
        if limits.is_empty() {
            return;
        }
        self.limit_shows();
        let agent = self.broker.agent.clone();
        self.request(&Request::Learned {
            key: key.to_owned(),
            agent,
            limits,
        });
    }

    /// Sends one request and reads its reply: `Some` only for `"ok": true`
    /// or a budget refusal.
    /// A broken connection is reopened once and the request sent again; if
    /// that fails too, permits are off for the rest of the agent's life.
    fn request(&mut self, request: &Request) -> Option<Reply> {
        if !self.is_on() {
            return None;
        }
        let broker = self.broker.address.clone()?;
        let agent = self.broker.agent.clone();
        let had_connection = self.connection.is_some();
        let result = match self.exchange(&broker, request) {
            Err(first) if had_connection && !answered(&first) => {
                eprintln!("{agent}: lost the rate broker connection ({first}); reconnecting");
                self.exchange(&broker, request)
            }
            other => other,
        };
        let op = request.op();
        match result {
            // A budget refusal is an answer the caller acts on.
            Ok(reply) if reply.ok || reply.spent => Some(reply),
            Ok(reply) => {
                eprintln!(
                    "{agent}: the rate broker refused {op}: {}; going on",
                    reply.reason()
                );
                None
            }
            Err(BrokerError::Exchange(ExchangeError::NotAReply(line))) => {
                eprintln!(
                    "{agent}: the rate broker answered {op} with {line:?}, not a JSON object; going on"
                );
                None
            }
            Err(error) => {
                self.give_up(&broker, &error);
                None
            }
        }
    }

    /// One request out, one reply in, on the open connection or a new one.
    /// A failure to talk drops the connection; a line that is not a reply
    /// keeps it (the broker is there, it said something odd).
    fn exchange(
        &mut self,
        broker: &BrokerAddress,
        request: &Request,
    ) -> Result<Reply, BrokerError> {
        let result = (|| {
            let connection = match &mut self.connection {
                Some(connection) => connection,
                None => self.connection.insert(connect(broker)?),
            };
            Ok(exchange(connection, request)?)
        })();
        if matches!(&result, Err(error) if !answered(error)) {
            self.connection = None;
        }
        result
    }

    fn give_up(&mut self, broker: &BrokerAddress, error: &BrokerError) {
        self.connection = None;
        // Every worker's client may fail at once: one warning is enough.
        if !self.broker.gone.swap(true, Ordering::Relaxed) {
            eprintln!(
                "{}: warning: rate broker at {broker} unreachable ({error}); going on without rate-limit permits",
                self.broker.agent,
            );
        }
    }
}

/// The tokens an item is expected to use: its JSON length / 4, rounded up,
/// at least 1 (about four characters make a token).
pub fn estimate_tokens(item: &Value) -> u64 {
    let length = serde_json::to_string(item)
        .map(|text| text.len())
        .unwrap_or(0);
    (length as u64).div_ceil(4).max(1)
}

/// The tokens a result says it used: `usage.total_tokens` (the OpenAI
/// shape), else `tokens`; a fraction is rounded up.
pub fn used_tokens(record: &Map<String, Value>) -> Option<u64> {
    let number = record
        .get("usage")
        .and_then(|usage| usage.get("total_tokens"))
        .filter(|value| value.is_number())
        .or_else(|| record.get("tokens").filter(|value| value.is_number()))?;
    if let Some(whole) = number.as_u64() {
        return Some(whole);
    }
    let float = number.as_f64().filter(|f| f.is_finite() && *f >= 0.0)?;
    Some(float.ceil() as u64)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tcp_tests;
