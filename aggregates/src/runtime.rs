//! Runtime aggregate: the agent runtime container of one establishment. Commands record the
//! operator's intent (provision, start, stop, restart, drain, resume); the runtime worker acts
//! on Docker outside any transaction and reports what happened as outcome commands (container
//! created, started, failed, stopped, health changed, what reconciliation observed).
//!
//! Every intent gets an operation number; an outcome names the operation it answers, so the
//! outcome of an operation that a newer intent superseded never completes the newer one.

use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::common::{wire_enum, ClaimOp, UniqueClaims};

/// Claim scope: one runtime per establishment (keyed by establishment id).
pub const ESTABLISHMENT_CLAIM: &str = "establishment_runtime";
/// Claim scope: a host port belongs to one runtime.
pub const HOST_PORT_CLAIM: &str = "host_port";
/// The issue a runtime carries between its start and its first health check.
pub const NOT_CHECKED_YET: &str = "not checked since it started";

/// What a runtime is, fixed at provisioning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeSpec {
    pub runtime_id: String,
    pub establishment_id: String,
    pub image: String,
    pub container_name: String,
    pub host_port: u16,
    /// Where the control plane reaches the runtime (loopback + host port).
    pub base_url: String,
    /// Public WebSocket URL that TwiML points media streams at (never the loopback URL).
    pub media_stream_url: Option<String>,
    /// Names of the provisioning env variables (their values are secret).
    pub env_keys: Vec<String>,
    /// The provisioning env as JSON, encrypted: base64(nonce || AES-256-GCM ciphertext).
    pub env_encrypted: Option<String>,
}

wire_enum!(
    /// A Docker operation the worker has to carry out.
    OpKind, "kind" {
        Create => "create",
        Start => "start",
        Stop => "stop",
        Restart => "restart",
    }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOp {
    pub id: u64,
    pub kind: OpKind,
}

wire_enum!(
    /// The container as the control plane last knew it.
    #[derive(Default)]
    Observed, "observed" {
        /// Not created yet.
        #[default]
        None => "none",
        Created => "created",
        Running => "running",
        Stopped => "stopped",
        /// Exited (or was killed) without the control plane asking.
        Exited => "exited",
        /// Removed behind the control plane's back.
        Missing => "missing",
        /// The last operation failed.
        Failed => "failed",
    }
);

wire_enum!(
    /// The status shown to operators: a pending operation, else what was observed.
    RuntimeStatus, "status" {
        Created => "created",
        Starting => "starting",
        Running => "running",
        Stopping => "stopping",
        Stopped => "stopped",
        Restarting => "restarting",
        Exited => "exited",
        Missing => "missing",
        Failed => "failed",
    }
);

/// What reconciliation found in Docker for a known runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedState {
    Running,
    Exited {
        exit_code: Option<i64>,
        detail: String,
    },
    Missing,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeCommand {
    Provision(Box<RuntimeSpec>),
    Start,
    Stop,
    Restart,
    Drain,
    Resume,
    RecordContainerCreated {
        op: u64,
        container_id: String,
        /// SHA-256 of the fresh runtime token given to this container.
        token_hash: String,
    },
    RecordCreateFailed {
        op: u64,
        reason: String,
    },
    RecordStarted {
        op: u64,
    },
    RecordStartFailed {
        op: u64,
        reason: String,
    },
    RecordStopped {
        op: u64,
    },
    RecordStopFailed {
        op: u64,
        reason: String,
    },
    RecordHealth {
        ready: bool,
        issues: Vec<String>,
    },
    RecordObserved(ObservedState),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RuntimeEvent {
    RuntimeProvisioned {
        spec: RuntimeSpec,
        op: u64,
    },
    ContainerCreated {
        op: u64,
        container_id: String,
        token_hash: String,
    },
    ContainerCreateFailed {
        op: u64,
        reason: String,
    },
    StartRequested {
        op: u64,
    },
    StopRequested {
        op: u64,
    },
    RestartRequested {
        op: u64,
    },
    Started {
        op: u64,
    },
    StartFailed {
        op: u64,
        reason: String,
    },
    Stopped {
        op: u64,
    },
    StopFailed {
        op: u64,
        reason: String,
    },
    DrainRequested,
    ResumeRequested,
    HealthChanged {
        ready: bool,
        issues: Vec<String>,
    },
    ContainerExited {
        exit_code: Option<i64>,
        detail: String,
    },
    ContainerVanished,
    ContainerRunning,
}
crate::domain_event!(RuntimeEvent {
    RuntimeProvisioned,
    ContainerCreated,
    ContainerCreateFailed,
    StartRequested,
    StopRequested,
    RestartRequested,
    Started,
    StartFailed,
    Stopped,
    StopFailed,
    DrainRequested,
    ResumeRequested,
    HealthChanged,
    ContainerExited,
    ContainerVanished,
    ContainerRunning
});

impl UniqueClaims for RuntimeEvent {
    fn unique_claims(&self) -> Vec<ClaimOp> {
        match self {
            RuntimeEvent::RuntimeProvisioned { spec, .. } => vec![
                ClaimOp::Claim {
                    scope: ESTABLISHMENT_CLAIM,
                    value: spec.establishment_id.clone(),
                },
                ClaimOp::Claim {
                    scope: HOST_PORT_CLAIM,
                    value: spec.host_port.to_string(),
                },
            ],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("this establishment already has a runtime")]
    AlreadyProvisioned,
    #[error("the runtime does not exist")]
    NotProvisioned,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    pub spec: Option<RuntimeSpec>,
    pub container_id: Option<String>,
    pub token_hash: Option<String>,
    pub observed: Observed,
    pub pending: Option<PendingOp>,
    pub last_op: u64,
    pub draining: bool,
    pub ready: bool,
    pub ready_issues: Vec<String>,
    pub last_error: Option<String>,
}

impl Runtime {
    pub fn exists(&self) -> bool {
        self.spec.is_some()
    }

    pub fn status(&self) -> RuntimeStatus {
        match self.pending.map(|p| p.kind) {
            Some(OpKind::Create) => RuntimeStatus::Created,
            Some(OpKind::Start) => RuntimeStatus::Starting,
            Some(OpKind::Stop) => RuntimeStatus::Stopping,
            Some(OpKind::Restart) => RuntimeStatus::Restarting,
            None => match self.observed {
                Observed::None | Observed::Created => RuntimeStatus::Created,
                Observed::Running => RuntimeStatus::Running,
                Observed::Stopped => RuntimeStatus::Stopped,
                Observed::Exited => RuntimeStatus::Exited,
                Observed::Missing => RuntimeStatus::Missing,
                Observed::Failed => RuntimeStatus::Failed,
            },
        }
    }

    /// Whether `op` is the pending operation and of one of `kinds`.
    fn answers(&self, op: u64, kinds: &[OpKind]) -> bool {
        self.pending
            .is_some_and(|p| p.id == op && kinds.contains(&p.kind))
    }

    fn next_op(&self) -> u64 {
        self.last_op + 1
    }

    pub fn decide(&self, command: RuntimeCommand) -> Result<Vec<RuntimeEvent>, RuntimeError> {
        use RuntimeCommand as C;
        use RuntimeEvent as E;
        if self.exists() {
            if matches!(command, C::Provision(_)) {
                return Err(RuntimeError::AlreadyProvisioned);
            }
        } else if !matches!(command, C::Provision(_)) {
            return Err(RuntimeError::NotProvisioned);
        }
        let pending = self.pending.map(|p| p.kind);
        let none = Ok(vec![]);
        match command {
            C::Provision(spec) => Ok(vec![E::RuntimeProvisioned {
                spec: *spec,
                op: self.next_op(),
            }]),
            C::Start => match pending {
                Some(OpKind::Start | OpKind::Restart) => none,
                None if self.observed == Observed::Running => none,
                _ => Ok(vec![E::StartRequested { op: self.next_op() }]),
            },
            C::Stop => match pending {
                Some(OpKind::Stop) => none,
                None if matches!(
                    self.observed,
                    Observed::None | Observed::Created | Observed::Stopped | Observed::Missing
                ) =>
                {
                    none
                }
                _ => Ok(vec![E::StopRequested { op: self.next_op() }]),
            },
            C::Restart => match pending {
                Some(OpKind::Restart) => none,
                _ => Ok(vec![E::RestartRequested { op: self.next_op() }]),
            },
            C::Drain if self.draining => none,
            C::Drain => Ok(vec![E::DrainRequested]),
            C::Resume if !self.draining => none,
            C::Resume => Ok(vec![E::ResumeRequested]),
            C::RecordContainerCreated {
                op,
                container_id,
                token_hash,
            } => {
                if self.container_id.as_ref() == Some(&container_id)
                    && self.token_hash.as_ref() == Some(&token_hash)
                    && !self.answers(op, &[OpKind::Create])
                {
                    return none;
                }
                Ok(vec![E::ContainerCreated {
                    op,
                    container_id,
                    token_hash,
                }])
            }
            C::RecordCreateFailed { op, reason } if self.answers(op, &[OpKind::Create]) => {
                Ok(vec![E::ContainerCreateFailed { op, reason }])
            }
            C::RecordStarted { op }
                if self.answers(op, &[OpKind::Start, OpKind::Restart])
                    || self.observed != Observed::Running =>
            {
                Ok(vec![E::Started { op }])
            }
            C::RecordStartFailed { op, reason }
                if self.answers(op, &[OpKind::Start, OpKind::Restart]) =>
            {
                Ok(vec![E::StartFailed { op, reason }])
            }
            C::RecordStopped { op }
                if self.answers(op, &[OpKind::Stop]) || self.observed == Observed::Running =>
            {
                Ok(vec![E::Stopped { op }])
            }
            C::RecordStopFailed { op, reason } if self.answers(op, &[OpKind::Stop]) => {
                Ok(vec![E::StopFailed { op, reason }])
            }
            C::RecordHealth { ready, issues } => {
                let current = self.pending.is_none() && self.observed == Observed::Running;
                if !current || (ready == self.ready && issues == self.ready_issues) {
                    return none;
                }
                Ok(vec![E::HealthChanged { ready, issues }])
            }
            // Reconciliation never second-guesses an operation in flight.
            C::RecordObserved(_) if self.pending.is_some() => none,
            C::RecordObserved(ObservedState::Running) if self.observed != Observed::Running => {
                Ok(vec![E::ContainerRunning])
            }
            C::RecordObserved(ObservedState::Exited { exit_code, detail })
                if self.observed == Observed::Running =>
            {
                Ok(vec![E::ContainerExited { exit_code, detail }])
            }
            C::RecordObserved(ObservedState::Missing)
                if self.container_id.is_some() && self.observed != Observed::Missing =>
            {
                Ok(vec![E::ContainerVanished])
            }
            // Stale outcomes and observations that match what is known change nothing.
            C::RecordCreateFailed { .. }
            | C::RecordStarted { .. }
            | C::RecordStartFailed { .. }
            | C::RecordStopped { .. }
            | C::RecordStopFailed { .. }
            | C::RecordObserved(_) => none,
        }
    }

    fn not_running(&mut self) {
        self.ready = false;
        self.ready_issues.clear();
    }

    fn complete(&mut self, op: u64) {
        if self.pending.is_some_and(|p| p.id == op) {
            self.pending = None;
        }
    }
}

impl Aggregate for Runtime {
    const TYPE: &'static str = "Runtime";
    type Command = RuntimeCommand;
    type Event = RuntimeEvent;
    type Error = RuntimeError;
    type Services = ();

    crate::handle_with_decide!();

    fn apply(&mut self, event: RuntimeEvent) {
        use RuntimeEvent as E;
        let request = |s: &mut Self, op: u64, kind: OpKind| {
            s.pending = Some(PendingOp { id: op, kind });
            s.last_op = s.last_op.max(op);
        };
        match event {
            E::RuntimeProvisioned { spec, op } => {
                self.spec = Some(spec);
                request(self, op, OpKind::Create);
            }
            E::ContainerCreated {
                op,
                container_id,
                token_hash,
            } => {
                self.container_id = Some(container_id);
                self.token_hash = Some(token_hash);
                if matches!(self.observed, Observed::None | Observed::Missing) {
                    self.observed = Observed::Created;
                }
                if self.answers(op, &[OpKind::Create]) {
                    self.pending = None;
                    self.last_error = None;
                }
            }
            E::ContainerCreateFailed { op, reason } => {
                self.complete(op);
                self.observed = Observed::Failed;
                self.last_error = Some(reason);
            }
            E::StartRequested { op } => request(self, op, OpKind::Start),
            E::StopRequested { op } => request(self, op, OpKind::Stop),
            E::RestartRequested { op } => request(self, op, OpKind::Restart),
            E::Started { op } => {
                self.complete(op);
                self.observed = Observed::Running;
                self.ready = false;
                self.ready_issues = vec![NOT_CHECKED_YET.to_string()];
                self.last_error = None;
            }
            E::StartFailed { op, reason } => {
                self.complete(op);
                self.observed = Observed::Failed;
                self.last_error = Some(reason);
                self.not_running();
            }
            E::Stopped { op } => {
                self.complete(op);
                self.observed = Observed::Stopped;
                self.last_error = None;
                self.not_running();
            }
            E::StopFailed { op, reason } => {
                self.complete(op);
                self.observed = Observed::Failed;
                self.last_error = Some(reason);
                self.not_running();
            }
            E::DrainRequested => self.draining = true,
            E::ResumeRequested => self.draining = false,
            E::HealthChanged { ready, issues } => {
                self.ready = ready;
                self.ready_issues = issues;
            }
            E::ContainerExited { detail, .. } => {
                self.observed = Observed::Exited;
                self.last_error = Some(detail);
                self.not_running();
            }
            E::ContainerVanished => {
                self.observed = Observed::Missing;
                self.container_id = None;
                self.last_error =
                    Some("the container was removed outside the control plane".into());
                self.not_running();
            }
            E::ContainerRunning => {
                self.observed = Observed::Running;
                self.ready = false;
                self.ready_issues = vec![NOT_CHECKED_YET.to_string()];
                self.last_error = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use RuntimeCommand as C;
    use RuntimeEvent as E;

    type F = TestFramework<Runtime>;

    fn spec() -> RuntimeSpec {
        RuntimeSpec {
            runtime_id: "rt_1".into(),
            establishment_id: "est_1".into(),
            image: "agent-runtime-sim:latest".into(),
            container_name: "agent_rt_est_1".into(),
            host_port: 18080,
            base_url: "http://127.0.0.1:18080".into(),
            media_stream_url: None,
            env_keys: vec!["APP_PUBLIC_DOMAIN".into()],
            env_encrypted: Some("c2VjcmV0".into()),
        }
    }

    fn provisioned() -> Vec<E> {
        vec![
            E::RuntimeProvisioned {
                spec: spec(),
                op: 1,
            },
            E::ContainerCreated {
                op: 1,
                container_id: "c1".into(),
                token_hash: "h1".into(),
            },
        ]
    }

    fn running() -> Vec<E> {
        let mut v = provisioned();
        v.extend([E::StartRequested { op: 2 }, E::Started { op: 2 }]);
        v
    }

    fn state(events: Vec<E>) -> Runtime {
        let mut r = Runtime::default();
        for e in events {
            r.apply(e);
        }
        r
    }

    #[test]
    fn provisioning_claims_the_establishment_and_the_host_port() {
        F::with(())
            .given_no_previous_events()
            .when(C::Provision(Box::new(spec())))
            .then_expect_events(vec![E::RuntimeProvisioned {
                spec: spec(),
                op: 1,
            }]);
        let claims = E::RuntimeProvisioned {
            spec: spec(),
            op: 1,
        }
        .unique_claims();
        assert_eq!(
            claims,
            vec![
                ClaimOp::Claim {
                    scope: ESTABLISHMENT_CLAIM,
                    value: "est_1".into()
                },
                ClaimOp::Claim {
                    scope: HOST_PORT_CLAIM,
                    value: "18080".into()
                },
            ]
        );
        assert_eq!(
            state(vec![E::RuntimeProvisioned {
                spec: spec(),
                op: 1
            }])
            .status(),
            RuntimeStatus::Created
        );
    }

    #[test]
    fn a_runtime_is_provisioned_once_and_must_exist_for_anything_else() {
        F::with(())
            .given(provisioned())
            .when(C::Provision(Box::new(spec())))
            .then_expect_error(RuntimeError::AlreadyProvisioned);
        F::with(())
            .given_no_previous_events()
            .when(C::Start)
            .then_expect_error(RuntimeError::NotProvisioned);
    }

    #[test]
    fn start_records_intent_and_the_outcome_makes_it_running() {
        F::with(())
            .given(provisioned())
            .when(C::Start)
            .then_expect_events(vec![E::StartRequested { op: 2 }]);
        let mut events = provisioned();
        events.push(E::StartRequested { op: 2 });
        assert_eq!(state(events.clone()).status(), RuntimeStatus::Starting);
        F::with(())
            .given(events)
            .when(C::RecordStarted { op: 2 })
            .then_expect_events(vec![E::Started { op: 2 }]);
        let r = state(running());
        assert_eq!(r.status(), RuntimeStatus::Running);
        assert!(!r.ready, "not ready until the first health check");
        assert_eq!(r.ready_issues, vec![NOT_CHECKED_YET.to_string()]);
    }

    #[test]
    fn lifecycle_commands_are_idempotent() {
        F::with(())
            .given(running())
            .when(C::Start)
            .then_expect_events(vec![]);
        let mut starting = provisioned();
        starting.push(E::StartRequested { op: 2 });
        F::with(())
            .given(starting)
            .when(C::Start)
            .then_expect_events(vec![]);
        let mut stopped = running();
        stopped.extend([E::StopRequested { op: 3 }, E::Stopped { op: 3 }]);
        F::with(())
            .given(stopped)
            .when(C::Stop)
            .then_expect_events(vec![]);
        let mut restarting = running();
        restarting.push(E::RestartRequested { op: 3 });
        F::with(())
            .given(restarting)
            .when(C::Restart)
            .then_expect_events(vec![]);
        let mut draining = running();
        draining.push(E::DrainRequested);
        F::with(())
            .given(draining)
            .when(C::Drain)
            .then_expect_events(vec![]);
        F::with(())
            .given(running())
            .when(C::Resume)
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_start_before_the_container_exists_supersedes_the_create() {
        let mut events = vec![
            E::RuntimeProvisioned {
                spec: spec(),
                op: 1,
            },
            E::StartRequested { op: 2 },
        ];
        // The worker creates the container on its way to starting it.
        events.push(E::ContainerCreated {
            op: 2,
            container_id: "c1".into(),
            token_hash: "h1".into(),
        });
        let r = state(events.clone());
        assert_eq!(
            r.status(),
            RuntimeStatus::Starting,
            "the start is still pending"
        );
        F::with(())
            .given(events)
            .when(C::RecordStarted { op: 2 })
            .then_expect_events(vec![E::Started { op: 2 }]);
    }

    #[test]
    fn the_outcome_of_a_superseded_operation_leaves_the_newer_one_pending() {
        let mut events = running();
        events.extend([E::StopRequested { op: 3 }, E::StartRequested { op: 4 }]);
        // The stop's failure arrives late: nothing to record, the start is still pending.
        F::with(())
            .given(events.clone())
            .when(C::RecordStopFailed {
                op: 3,
                reason: "x".into(),
            })
            .then_expect_events(vec![]);
        events.push(E::Stopped { op: 3 });
        let r = state(events);
        assert_eq!(
            r.pending,
            Some(PendingOp {
                id: 4,
                kind: OpKind::Start
            })
        );
        assert_eq!(r.status(), RuntimeStatus::Starting);
    }

    #[test]
    fn a_failed_start_is_shown_with_its_reason() {
        let mut events = provisioned();
        events.push(E::StartRequested { op: 2 });
        F::with(())
            .given(events.clone())
            .when(C::RecordStartFailed {
                op: 2,
                reason: "port is already allocated".into(),
            })
            .then_expect_events(vec![E::StartFailed {
                op: 2,
                reason: "port is already allocated".into(),
            }]);
        events.push(E::StartFailed {
            op: 2,
            reason: "port is already allocated".into(),
        });
        let r = state(events);
        assert_eq!(r.status(), RuntimeStatus::Failed);
        assert_eq!(r.last_error.as_deref(), Some("port is already allocated"));
    }

    #[test]
    fn health_is_recorded_only_when_it_changes_and_only_while_running() {
        let healthy = E::HealthChanged {
            ready: true,
            issues: vec![],
        };
        F::with(())
            .given(running())
            .when(C::RecordHealth {
                ready: true,
                issues: vec![],
            })
            .then_expect_events(vec![healthy.clone()]);
        let mut events = running();
        events.push(healthy);
        F::with(())
            .given(events.clone())
            .when(C::RecordHealth {
                ready: true,
                issues: vec![],
            })
            .then_expect_events(vec![]);
        F::with(())
            .given(events.clone())
            .when(C::RecordHealth {
                ready: false,
                issues: vec!["model not loaded".into()],
            })
            .then_expect_events(vec![E::HealthChanged {
                ready: false,
                issues: vec!["model not loaded".into()],
            }]);
        events.push(E::StopRequested { op: 3 });
        F::with(())
            .given(events)
            .when(C::RecordHealth {
                ready: false,
                issues: vec!["late".into()],
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn reconciliation_reflects_a_container_killed_or_removed_outside() {
        let exited = ObservedState::Exited {
            exit_code: Some(137),
            detail: "exited with code 137".into(),
        };
        F::with(())
            .given(running())
            .when(C::RecordObserved(exited.clone()))
            .then_expect_events(vec![E::ContainerExited {
                exit_code: Some(137),
                detail: "exited with code 137".into(),
            }]);
        F::with(())
            .given(running())
            .when(C::RecordObserved(ObservedState::Running))
            .then_expect_events(vec![]);
        F::with(())
            .given(running())
            .when(C::RecordObserved(ObservedState::Missing))
            .then_expect_events(vec![E::ContainerVanished]);
        let mut stopping = running();
        stopping.push(E::StopRequested { op: 3 });
        F::with(())
            .given(stopping)
            .when(C::RecordObserved(exited))
            .then_expect_events(vec![]);
        let mut gone = running();
        gone.push(E::ContainerVanished);
        let r = state(gone.clone());
        assert_eq!(r.status(), RuntimeStatus::Missing);
        assert!(r.container_id.is_none());
        F::with(())
            .given(gone)
            .when(C::Stop)
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_container_started_outside_is_shown_running() {
        let mut events = running();
        events.extend([E::StopRequested { op: 3 }, E::Stopped { op: 3 }]);
        F::with(())
            .given(events)
            .when(C::RecordObserved(ObservedState::Running))
            .then_expect_events(vec![E::ContainerRunning]);
    }

    #[test]
    fn drain_and_resume_flip_the_draining_flag() {
        F::with(())
            .given(running())
            .when(C::Drain)
            .then_expect_events(vec![E::DrainRequested]);
        let mut events = running();
        events.push(E::DrainRequested);
        assert!(state(events.clone()).draining);
        F::with(())
            .given(events)
            .when(C::Resume)
            .then_expect_events(vec![E::ResumeRequested]);
    }

    #[test]
    fn runtime_enums_keep_their_wire_names() {
        use crate::common::assert_wire_form;
        assert_wire_form(OpKind::ALL, &["create", "start", "stop", "restart"]);
        assert_wire_form(
            Observed::ALL,
            &[
                "none", "created", "running", "stopped", "exited", "missing", "failed",
            ],
        );
        assert_wire_form(
            RuntimeStatus::ALL,
            &[
                "created",
                "starting",
                "running",
                "stopping",
                "stopped",
                "restarting",
                "exited",
                "missing",
                "failed",
            ],
        );
        // A snapshot as stored before the enums shared one macro.
        let stored = serde_json::json!({
            "spec": null, "container_id": "c1", "token_hash": "h", "observed": "exited",
            "pending": {"id": 3, "kind": "restart"}, "last_op": 3, "draining": false,
            "ready": false, "ready_issues": [], "last_error": null
        });
        let runtime: Runtime = serde_json::from_value(stored).unwrap();
        assert_eq!(runtime.observed, Observed::Exited);
        assert_eq!(
            runtime.pending,
            Some(PendingOp {
                id: 3,
                kind: OpKind::Restart
            })
        );
        assert_eq!(runtime.status(), RuntimeStatus::Restarting);
    }
}
