//! The typed job file: one struct per TOML table, every key optional except
//! `input.path`, unknown keys rejected. Defaults live here, next to the keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::cache::CacheSettings;
use super::executor::ExecutorSettings;
use super::llm::LlmSettings;
use super::notify::NotifySettings;
use super::values::{AgentTimeout, ByteSize, Count, Deadline, HumanDuration, PositiveRate, Share};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Defaults to the job file's stem.
    pub name: Option<String>,
    pub input: InputSettings,
    #[serde(default)]
    pub layout: LayoutSettings,
    #[serde(default)]
    pub agent: AgentSettings,
    #[serde(default)]
    pub limits: LimitsSettings,
    #[serde(default)]
    pub schedule: ScheduleSettings,
    pub rate: Option<RateSettings>,
    #[serde(default)]
    pub output: OutputSettings,
    #[serde(default)]
    pub executor: ExecutorSettings,
    /// A program told when the run ends (`[notify]`).
    pub notify: Option<NotifySettings>,
    /// The answer cache of the LLM backends (`[cache]`); None: no cache.
    pub cache: Option<CacheSettings>,
    /// A pipeline's `[[stage]]`s (empty: the one stage is `[agent]`).
    #[serde(default, rename = "stage", skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<super::stages::StageSettings>,
}

impl JobSettings {
    /// Whether agents take a permit for every call: the job sets rate limits
    /// or a budget (`budget_applies`). Otherwise an agent asks only where a
    /// limit may show (an LLM backend probes its server's first answers) or
    /// once one has (the agent's `PermitPolicy`).
    pub fn permits_from_start(&self) -> bool {
        self.rate.is_some() || self.budget_applies()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSettings {
    pub path: PathBuf,
    #[serde(default)]
    pub format: InputFormat,
    #[serde(default = "default_id_field")]
    pub id: String,
}

fn default_id_field() -> String {
    "id".to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    #[default]
    Auto,
    Json,
    Jsonl,
    Lines,
}

/// Either the three counts, or `items_per_agent` with (at most) the other two.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutSettings {
    pub segments: Option<Count>,
    pub orchestrators: Option<Count>,
    pub agents: Option<Count>,
    pub items_per_agent: Option<Count>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Run `command` once per item.
    #[default]
    Exec,
    /// The built-in deterministic generator.
    Demo,
    /// An OpenAI-compatible `POST {base_url}/chat/completions` ([agent.llm]).
    Openai,
    /// Anthropic's `POST {base_url}/messages` ([agent.llm]).
    Anthropic,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    #[serde(default)]
    pub backend: Backend,
    /// The exec backend's command (item JSON on stdin, result on stdout), or a
    /// list of commands tried in order when the one in use keeps failing.
    pub command: Option<Commands>,
    /// A program honouring the agent contract, run instead of nightshift-agent.
    pub program: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    // Zero would end every agent (or call) at once: refused (job::positive).
    #[serde(default, deserialize_with = "super::positive::optional_timeout")]
    pub timeout: Option<AgentTimeout>,
    #[serde(default, deserialize_with = "super::positive::optional_duration")]
    pub stall_timeout: Option<HumanDuration>,
    #[serde(default, deserialize_with = "super::positive::optional_duration")]
    pub item_timeout: Option<HumanDuration>,
    #[serde(default = "default_kill_grace")]
    pub kill_grace: HumanDuration,
    pub memory_limit: Option<ByteSize>,
    pub memory_estimate: Option<ByteSize>,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: HumanDuration,
    #[serde(default = "default_retries")]
    pub item_retries: u32,
    /// Items nightshift-agent works on at once (exec: item processes at once).
    /// Left out of task files at its default, so they stay as they were.
    #[serde(
        default = "default_concurrency",
        skip_serializing_if = "is_default_concurrency"
    )]
    pub concurrency: Count,
    #[serde(default)]
    pub demo: DemoSettings,
    /// Checks a result must pass before it is saved.
    pub validate: Option<ValidateSettings>,
    /// The LLM backends' endpoint, prompts and request parameters. Left out
    /// of task files when absent, so other backends' stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSettings>,
    /// `[agent.price]`: USD per million tokens, for the cost of each record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<crate::money::Price>,
}

/// `command = ["python3", "gen.py"]`, or a fallback list
/// `command = [["python3", "api.py"], ["python3", "local.py"]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Commands {
    One(Vec<String>),
    Fallbacks(Vec<Vec<String>>),
}

impl Commands {
    /// Every command, in the order they are tried.
    pub fn list(&self) -> Vec<&[String]> {
        match self {
            Self::One(command) => vec![command.as_slice()],
            Self::Fallbacks(commands) => commands.iter().map(Vec::as_slice).collect(),
        }
    }
}

/// `[agent.validate]`: what nightshift-agent checks in every result before it
/// saves it. A rejected result is retried (agent.item_retries), then recorded in
/// the failures file, never saved.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateSettings {
    /// Fields the record must have, non-empty.
    #[serde(default)]
    pub required: Vec<String>,
    /// Regular expressions that reject a result when they match its text.
    #[serde(default)]
    pub reject: Vec<Pattern>,
    /// The field whose text `reject` is matched against (default "output";
    /// the whole record's JSON when the field is absent or not a string).
    #[serde(default = "default_validate_field")]
    pub field: String,
    /// A program that gets the record as JSON on stdin; exit 0 means good.
    pub command: Option<Vec<String>>,
}

fn default_validate_field() -> String {
    "output".to_owned()
}

/// A regular expression, checked when the job file is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Pattern(pub String);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        regex::Regex::new(&text)
            .map(|_| Self(text))
            .map_err(|e| serde::de::Error::custom(format!("not a valid regular expression: {e}")))
    }
}

fn default_kill_grace() -> HumanDuration {
    HumanDuration::from_secs(10)
}

fn default_retries() -> u32 {
    2
}

fn default_concurrency() -> Count {
    Count(1)
}

fn is_default_concurrency(concurrency: &Count) -> bool {
    *concurrency == default_concurrency()
}

fn default_retry_backoff() -> HumanDuration {
    HumanDuration::from_secs(5)
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            backend: Backend::default(),
            command: None,
            program: None,
            env: BTreeMap::new(),
            timeout: None,
            stall_timeout: None,
            item_timeout: None,
            kill_grace: default_kill_grace(),
            memory_limit: None,
            memory_estimate: None,
            retries: default_retries(),
            retry_backoff: default_retry_backoff(),
            item_retries: default_retries(),
            concurrency: default_concurrency(),
            demo: DemoSettings::default(),
            validate: None,
            llm: None,
            price: None,
        }
    }
}

/// The demo backend's knobs. Deterministic: the same item and attempt always
/// behave the same.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSettings {
    #[serde(default = "default_demo_latency")]
    pub latency: HumanDuration,
    #[serde(default = "zero_bytes")]
    pub memory: ByteSize,
    #[serde(default)]
    pub fail_rate: Share,
    #[serde(default)]
    pub crash_rate: Share,
}

fn default_demo_latency() -> HumanDuration {
    HumanDuration::from_millis(50)
}

fn zero_bytes() -> ByteSize {
    ByteSize(0)
}

impl Default for DemoSettings {
    fn default() -> Self {
        Self {
            latency: default_demo_latency(),
            memory: zero_bytes(),
            fail_rate: Share(0.0),
            crash_rate: Share(0.0),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSettings {
    /// Defaults to the number of CPUs.
    pub max_parallel: Option<Count>,
    pub ram_ceiling: Option<ByteSize>,
    pub min_free: Option<ByteSize>,
    // The loop waits on these: zero would make it spin (job::positive).
    #[serde(
        default = "default_sample_interval",
        deserialize_with = "super::positive::duration"
    )]
    pub sample_interval: HumanDuration,
    #[serde(
        default = "default_progress_interval",
        deserialize_with = "super::positive::duration"
    )]
    pub progress_interval: HumanDuration,
    /// Each agent's log is rotated to agent_NN.log.1 past this size.
    #[serde(default = "default_agent_log_limit")]
    pub agent_log_limit: ByteSize,
    /// How agent.memory_limit is enforced.
    #[serde(default)]
    pub memory_enforcement: MemoryEnforcement,
    /// Free space the run directory's filesystem must keep: below it nothing
    /// more is launched (and with nothing running the run stops, exit 5).
    /// "0B" turns the check off.
    #[serde(default = "default_min_disk")]
    pub min_disk: ByteSize,
    /// USD the whole run may spend, resumes included (needs [agent.price]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
    /// Tokens the whole run may use, resumes included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

fn default_min_disk() -> ByteSize {
    ByteSize(100 << 20)
}

/// `auto`: a memory cgroup per agent where the machine lets us create one (a
/// hard limit, kernel-enforced), else sampling; `sampling`: sampling only;
/// `cgroup`: cgroups or refuse to start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryEnforcement {
    #[default]
    Auto,
    Sampling,
    Cgroup,
}

fn default_agent_log_limit() -> ByteSize {
    ByteSize(16 << 20)
}

fn default_sample_interval() -> HumanDuration {
    HumanDuration::from_millis(500)
}

fn default_progress_interval() -> HumanDuration {
    HumanDuration::from_secs(30)
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            max_parallel: None,
            ram_ceiling: None,
            min_free: None,
            sample_interval: default_sample_interval(),
            progress_interval: default_progress_interval(),
            agent_log_limit: default_agent_log_limit(),
            min_disk: default_min_disk(),
            memory_enforcement: MemoryEnforcement::default(),
            max_cost: None,
            max_tokens: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Launch this many agents first, then wait `warmup_delay`.
    pub warmup: Option<Count>,
    #[serde(default = "thirty_seconds")]
    pub warmup_delay: HumanDuration,
    pub wave_size: Option<Count>,
    #[serde(default = "thirty_seconds")]
    pub wave_interval: HumanDuration,
    #[serde(default = "zero_duration")]
    pub orchestrator_stagger: HumanDuration,
    pub deadline: Option<Deadline>,
    #[serde(default = "default_drain")]
    pub drain: HumanDuration,
}

fn thirty_seconds() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn zero_duration() -> HumanDuration {
    HumanDuration::from_secs(0)
}

fn default_drain() -> HumanDuration {
    HumanDuration::from_secs(600)
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            warmup: None,
            warmup_delay: thirty_seconds(),
            wave_size: None,
            wave_interval: thirty_seconds(),
            orchestrator_stagger: zero_duration(),
            deadline: None,
            drain: default_drain(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateSettings {
    pub requests_per_minute: Option<PositiveRate>,
    pub tokens_per_minute: Option<PositiveRate>,
    #[serde(default = "default_burst")]
    pub burst: Count,
    /// How long every permit waits after an agent reports a rate-limit answer
    /// without saying for how long.
    #[serde(default = "thirty_seconds")]
    pub backoff: HumanDuration,
    /// Hard daily budgets: no more in any 24 hours, resumed sessions included
    /// (a request the day cannot cover stops the run with exit code 4).
    pub tokens_per_day: Option<Count>,
    pub requests_per_day: Option<Count>,
}

fn default_burst() -> Count {
    Count(1)
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSettings {
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// One JSON array.
    #[default]
    Json,
    /// One record per line.
    Jsonl,
}
