//! Watching running attempts: exits and signals as they arrive, and on the
//! clock the deadlines (timeout, stall, the KILL after a TERM), the periodic
//! look at every process tree, and the sweeps that leave nothing behind.

use std::collections::HashSet;
use std::time::Instant;

use nix::sys::signal::Signal;
use serde_json::json;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use shared::job::AgentTimeout;

use super::{Ending, Stop, Supervisor};
use crate::error::{Result, SupervisorError};
use crate::proc_table;
use crate::reaper::{ExitHow, Msg};
use crate::slot::{Kill, Slot};

impl<'a> Supervisor<'a> {
    pub(super) fn on_message(&mut self, message: Msg) -> Result<()> {
        match message {
            Msg::Exited { pid, how } => {
                let Some(slot) = self.slots.get_mut(&pid) else {
                    // An adopted orphan, reaped: nothing to account for.
                    self.leftovers.strays.retain(|s| s.pid != pid);
                    return Ok(());
                };
                slot.exit = Some(how);
                let seconds = slot.started.elapsed().as_secs_f64();
                let name = slot.agent.name.clone();
                let killing = slot.kill.is_some();
                let fields = match how {
                    ExitHow::Code(code) => json!({"pid": pid, "code": code, "seconds": seconds}),
                    ExitHow::Signal(signal) => {
                        json!({"pid": pid, "signal": signal, "seconds": seconds})
                    }
                };
                self.event("exited", Some(&name), fields)?;
                if !killing {
                    self.finish(pid)?;
                }
                Ok(())
            }
            Msg::Signal(signal) => self.on_signal(signal),
        }
    }

    pub(super) fn on_time(&mut self, now: Instant) -> Result<()> {
        if now >= self.next_tick {
            self.tick(now);
            self.next_tick = now + self.settings().limits.sample_interval.get();
        }
        let stall_timeout = self.settings().agent.stall_timeout.map(|d| d.get());
        let pids: Vec<i32> = self.slots.keys().copied().collect();
        for pid in pids {
            let Some(slot) = self.slots.get_mut(&pid) else {
                continue;
            };
            match slot.kill {
                None if slot.exit.is_none() && slot.timed_out(now) => {
                    self.start_kill(pid, "timeout")?
                }
                None if slot.exit.is_none() && slot.stalled(stall_timeout, now) => {
                    self.start_kill(pid, "stall")?
                }
                Some(kill) if !kill.hard_sent && now >= kill.hard_at => {
                    slot.tree.signal(Signal::SIGKILL);
                    slot.kill = Some(Kill {
                        hard_sent: true,
                        ..kill
                    });
                }
                _ => {}
            }
            if self
                .slots
                .get(&pid)
                .is_some_and(|s| s.kill.is_some() && s.finished())
            {
                self.finish(pid)?;
            }
        }
        Ok(())
    }

    /// The periodic look at every tree: new descendants, adopted orphans,
    /// agent-file growth, and relative timeouts once they are known.
    pub(super) fn tick(&mut self, now: Instant) {
        self.adopt_orphans();
        let relative = match self.settings().agent.timeout {
            Some(AgentTimeout::PercentOfMedian(percent)) => Some(percent),
            _ => None,
        };
        let run = self.inputs.run;
        for slot in self.slots.values_mut() {
            slot.tree.refresh();
            slot.observe_output(&run.agent_output(slot.agent.at), now);
            if let (Some(percent), None) = (relative, slot.deadline) {
                let items = slot.agent.ids.len().saturating_sub(slot.saved_at_launch);
                if let Some(limit) = self.per_item.limit(percent, items) {
                    slot.deadline = Some(slot.started + limit);
                }
            }
        }
    }

    /// Children of the supervisor that are not agents are orphans it adopted
    /// as subreaper: each joins the tree of the agent it came from (by process
    /// group or session, else by its inherited NIGHTSHIFT_AGENT).
    pub(super) fn adopt_orphans(&mut self) {
        for pid in proc_table::children(self.me) {
            if self.slots.contains_key(&pid)
                || self.slots.values().any(|s| s.tree.contains(pid))
                || self.leftovers.knows(pid)
            {
                continue;
            }
            let Some(stat) = proc_table::stat(pid).filter(|s| !s.is_gone()) else {
                continue;
            };
            let agent_name = proc_table::environ_var(pid, "NIGHTSHIFT_AGENT");
            let from = |s: &&mut Slot<'a>| {
                stat.pgid == s.pid
                    || stat.sid == s.pid
                    || agent_name.as_deref() == Some(s.agent.name.as_str())
            };
            match self.slots.values_mut().find(from) {
                Some(slot) => slot.tree.adopt(&stat),
                None => self.leftovers.adopt(stat, agent_name.as_deref()),
            }
        }
    }

    pub(super) fn start_kill(&mut self, pid: i32, reason: &'static str) -> Result<()> {
        let grace = self.settings().agent.kill_grace.get();
        let Some(slot) = self.slots.get_mut(&pid) else {
            return Ok(());
        };
        if slot.kill.is_some() {
            return Ok(());
        }
        let processes = slot.tree.signal(Signal::SIGTERM);
        slot.kill = Some(Kill {
            reason,
            hard_at: Instant::now() + grace,
            hard_sent: false,
        });
        let name = slot.agent.name.clone();
        if reason != "shutdown" {
            self.console.agent_failed(
                &name,
                &format!("hit its {reason}: ending its {processes} process(es)"),
                None,
            );
        }
        self.event(
            "killed",
            Some(&name),
            json!({"pid": pid, "reason": reason, "processes": processes}),
        )
    }

    pub(super) fn on_signal(&mut self, signal: i32) -> Result<()> {
        if signal == SIGHUP {
            // A closed terminal or ssh session must not end an overnight run.
            return self.event("sighup-ignored", None, json!({}));
        }
        if signal != SIGINT && signal != SIGTERM {
            return Ok(());
        }
        if self.stop == Stop::Killing {
            // Ctrl-C again: no more waiting.
            let now = Instant::now();
            for slot in self.slots.values_mut() {
                if let Some(kill) = slot.kill.as_mut() {
                    kill.hard_at = now;
                }
            }
            return self.event("shutdown-now", None, json!({"signal": signal}));
        }
        let grace = self.settings().agent.kill_grace.get();
        self.console.stopping(grace);
        self.event(
            "shutdown",
            None,
            json!({"signal": signal, "grace_seconds": grace.as_secs_f64()}),
        )?;
        self.ending = Ending::Interrupted;
        self.stop = Stop::Killing;
        self.retries.clear();
        let pids: Vec<i32> = self.slots.keys().copied().collect();
        for pid in pids {
            self.start_kill(pid, "shutdown")?;
        }
        self.events
            .sync()
            .map_err(SupervisorError::io("cannot sync events.jsonl"))
    }

    /// Makes sure no process started for the agents `names` is alive.
    pub(super) fn sweep(&mut self, names: &HashSet<String>, reason: &str) -> Result<()> {
        let grace = self.settings().agent.kill_grace.get();
        self.adopt_orphans();
        let rounds = self.leftovers.sweep(self.inputs.run.root(), names, grace);
        for round in rounds {
            for (agent, processes) in round {
                self.event(
                    "killed",
                    Some(&agent),
                    json!({"reason": reason, "processes": processes}),
                )?;
            }
        }
        Ok(())
    }
}
