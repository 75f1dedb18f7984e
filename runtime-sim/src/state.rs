//! What the runtime knows about itself: readiness issues, draining, call counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::config::Config;

pub struct SimState {
    pub config: Config,
    /// Issues set by fault switches (env or `/admin/faults`).
    fault_issues: Mutex<Vec<String>>,
    /// An issue from the control-plane check, until it passes.
    control_plane_issue: Mutex<Option<String>>,
    draining: AtomicBool,
    active_calls: AtomicU64,
    total_calls_handled: AtomicU64,
}

impl SimState {
    pub fn new(config: Config) -> Self {
        let control_plane_issue = config
            .check_control_plane
            .then(|| "control plane not checked yet".to_string());
        Self {
            fault_issues: Mutex::new(config.unready.clone()),
            control_plane_issue: Mutex::new(control_plane_issue),
            config,
            draining: AtomicBool::new(false),
            active_calls: AtomicU64::new(0),
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
        self.active_calls.load(Ordering::SeqCst)
    }

    pub fn total_calls_handled(&self) -> u64 {
        self.total_calls_handled.load(Ordering::SeqCst)
    }

    /// Sets the number of calls in progress; calls that end count as handled.
    pub fn set_active_calls(&self, n: u64) {
        let before = self.active_calls.swap(n, Ordering::SeqCst);
        if n < before {
            self.total_calls_handled
                .fetch_add(before - n, Ordering::SeqCst);
        }
    }
}
