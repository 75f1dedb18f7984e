//! What the runtime knows about itself: readiness issues, draining, call counters, the
//! control-plane client, the outbox and the simulated calls.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::calls::Registry;
use crate::config::Config;
use crate::cp_client::CpClient;
use crate::outbox::Outbox;

pub struct SimState {
    pub config: Config,
    pub client: Arc<CpClient>,
    pub outbox: Arc<Outbox>,
    pub calls: Registry,
    /// Simulated calls in progress (media streams and `POST /sim/calls`).
    live_calls: AtomicU64,
    /// Issues set by fault switches (env or `/admin/faults`).
    fault_issues: Mutex<Vec<String>>,
    /// An issue from the control-plane check, until it passes.
    control_plane_issue: Mutex<Option<String>>,
    draining: AtomicBool,
    /// Calls pretended through `POST /admin/calls` (to exercise drain-then-stop).
    pretend_calls: AtomicU64,
    total_calls_handled: AtomicU64,
}

impl SimState {
    pub fn new(config: Config) -> Self {
        let control_plane_issue = config
            .check_control_plane
            .then(|| "control plane not checked yet".to_string());
        let client = Arc::new(CpClient::new(
            &config.control_plane_url,
            &config.control_plane_token,
            config.outbox.http_timeout,
            config.outbox.workers,
        ));
        let outbox = Outbox::new(client.clone(), config.outbox.clone());
        Self {
            fault_issues: Mutex::new(config.unready.clone()),
            control_plane_issue: Mutex::new(control_plane_issue),
            config,
            client,
            outbox,
            calls: Registry::default(),
            live_calls: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            pretend_calls: AtomicU64::new(0),
            total_calls_handled: AtomicU64::new(0),
        }
    }

    /// Everything that keeps the runtime from taking calls; empty means ready.
    pub fn issues(&self) -> Vec<String> {
        let mut issues = self.fault_issues.lock().expect("lock").clone();
        if let Some(i) = self.control_plane_issue.lock().expect("lock").clone() {
            issues.push(i);
        }
        issues
    }

    pub fn set_fault_issues(&self, issues: Vec<String>) {
        *self.fault_issues.lock().expect("lock") = issues;
    }

    pub fn set_control_plane_issue(&self, issue: Option<String>) {
        *self.control_plane_issue.lock().expect("lock") = issue;
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::SeqCst);
    }

    pub fn active_calls(&self) -> u64 {
        self.live_calls.load(Ordering::SeqCst) + self.pretend_calls.load(Ordering::SeqCst)
    }

    pub fn total_calls_handled(&self) -> u64 {
        self.total_calls_handled.load(Ordering::SeqCst)
    }

    /// A simulated call started.
    pub fn call_started(&self) {
        self.live_calls.fetch_add(1, Ordering::SeqCst);
    }

    /// A simulated call ended: it counts as handled.
    pub fn call_ended(&self) {
        self.live_calls.fetch_sub(1, Ordering::SeqCst);
        self.total_calls_handled.fetch_add(1, Ordering::SeqCst);
    }

    /// Sets the number of pretended calls in progress; pretended calls that end count as
    /// handled. Simulated calls are counted apart and unaffected.
    pub fn set_active_calls(&self, n: u64) {
        let before = self.pretend_calls.swap(n, Ordering::SeqCst);
        if n < before {
            self.total_calls_handled
                .fetch_add(before - n, Ordering::SeqCst);
        }
    }
}
