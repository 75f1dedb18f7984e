//! `control-plane bench ...`: event-store benchmarks whose figures go in docs/benchmarks.md.

mod reports;
mod runtime_ready;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::user::{User, UserCommand};

use crate::config::Config;
use crate::state::AppState;
use crate::store::{CommandBus, CommandContext, EventStore, ExecOptions};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Appends N events to one stream and compares the cost of the first and last 1,000.
    AppendCost {
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// Load the aggregate from the database (snapshot + tail) on every command instead of
        /// the in-process cache.
        #[arg(long)]
        no_cache: bool,
    },
    /// Measures append-to-visible lag of the projectors under concurrent writers.
    ProjectionLag {
        #[arg(long, default_value_t = 2_000)]
        events: u64,
        #[arg(long, default_value_t = 16)]
        writers: u64,
    },
    /// Provision-to-ready time of a runtime on the local Docker engine: provisions and starts
    /// one runtime per run (each in a new establishment) and waits for it to be ready.
    RuntimeReady {
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// A local image implementing the runtime contract.
        #[arg(long, default_value = "agent-runtime-sim:latest")]
        image: String,
    },
    /// Report latency over many calls: writes N calls over D days straight into the event
    /// store, builds the report rollups with the rebuild path, then times each report
    /// (docs/benchmarks.md). Use a scratch database.
    Reports {
        #[arg(long, default_value_t = 1_000_000)]
        calls: u64,
        #[arg(long, default_value_t = 30)]
        days: i64,
        /// Timed requests per report.
        #[arg(long, default_value_t = 200)]
        runs: u32,
    },
}

pub async fn run(config: Config, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::AppendCost { events, no_cache } => {
            append_cost(config, events, no_cache).await
        }
        BenchCommand::ProjectionLag { events, writers } => {
            projection_lag(config, events, writers).await
        }
        BenchCommand::RuntimeReady { runs, image } => {
            runtime_ready::runtime_ready(config, runs, image).await
        }
        BenchCommand::Reports { calls, days, runs } => {
            reports::reports(config, calls, days, runs).await
        }
    }
}

async fn register(bus: &CommandBus, ctx: &CommandContext) -> anyhow::Result<String> {
    let id = crate::ids::new_id("usr");
    let email = format!("bench-{}@bench.invalid", id.to_ascii_lowercase());
    bus.execute::<User>(
        &id,
        UserCommand::Register {
            user_id: id.clone(),
            email: email.parse()?,
            display_name: "bench".into(),
            password_hash: None,
            platform_admin: false,
        },
        ctx,
        ExecOptions::default(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(id)
}

async fn rename(
    bus: &CommandBus,
    id: &str,
    i: u64,
    ctx: &CommandContext,
) -> anyhow::Result<crate::store::Outcome<User>> {
    bus.execute::<User>(
        id,
        UserCommand::ChangeDisplayName {
            display_name: format!("name {i}"),
        },
        ctx,
        ExecOptions::default(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Appends `n` events to one stream; prints the cost of the first and the last 1,000.
async fn append_cost(config: Config, n: u64, no_cache: bool) -> anyhow::Result<()> {
    let state = AppState::build(config).await?;
    let store = EventStore::new(state.pool.clone(), state.hub.clone());
    let bus = if no_cache {
        CommandBus::without_cache(store)
    } else {
        CommandBus::new(store)
    };
    let ctx = CommandContext::system("bench");
    // Warm up connections and statements on another stream.
    let warm = register(&bus, &ctx).await?;
    for i in 0..200 {
        rename(&bus, &warm, i, &ctx).await?;
    }
    let id = register(&bus, &ctx).await?;
    let window = 1000.min(n / 2).max(1);
    let mut marks = Vec::with_capacity(n as usize + 1);
    let started = Instant::now();
    marks.push(started);
    for i in 0..n {
        rename(&bus, &id, i, &ctx).await?;
        marks.push(Instant::now());
    }
    let total = started.elapsed();
    let windows: Vec<String> = (0..n / window)
        .map(|w| {
            let d = marks[((w + 1) * window) as usize] - marks[(w * window) as usize];
            format!("{:.0}", d.as_secs_f64() * 1e3)
        })
        .collect();
    println!("ms per {window} events, in order: {}", windows.join(" "));
    let first = marks[window as usize] - marks[0];
    let last = marks[n as usize] - marks[(n - window) as usize];
    let ratio = last.as_secs_f64() / first.as_secs_f64();
    // Medians of single commands: background work of the machine (autovacuum, checkpoints,
    // other processes) lands in totals, rarely in medians.
    let per_command = |from: u64, to: u64| -> Duration {
        let mut d: Vec<Duration> = (from..to)
            .map(|i| marks[(i + 1) as usize] - marks[i as usize])
            .collect();
        d.sort();
        d[d.len() / 2]
    };
    let (m_first, m_last) = (per_command(0, window), per_command(n - window, n));
    let m_ratio = m_last.as_secs_f64() / m_first.as_secs_f64();
    println!(
        "append-cost: {n} events on one stream ({}), {:.0} events/s overall",
        if no_cache {
            "loaded from snapshot + tail every command"
        } else {
            "cached aggregate"
        },
        n as f64 / total.as_secs_f64()
    );
    println!(
        "first {window}: {:.1} ms ({:.3} ms/event, median {:.3} ms)   last {window}: {:.1} ms ({:.3} ms/event, median {:.3} ms)   ratio last/first: {ratio:.2} total, {m_ratio:.2} median ({})",
        first.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3 / window as f64,
        m_first.as_secs_f64() * 1e3,
        last.as_secs_f64() * 1e3,
        last.as_secs_f64() * 1e3 / window as f64,
        m_last.as_secs_f64() * 1e3,
        if ratio <= 1.2 && m_ratio <= 1.2 {
            "within the 1.2x budget"
        } else if m_ratio <= 1.2 {
            "median within the 1.2x budget, total over it: background noise"
        } else {
            "OVER the 1.2x budget"
        }
    );
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `writers` concurrent writers append `events` in total; for each append, the time until
/// the identity projector has applied it (append-to-visible lag).
async fn projection_lag(config: Config, events: u64, writers: u64) -> anyhow::Result<()> {
    let state = AppState::build(config).await?;
    let tasks = state.projectors.spawn();
    state.projectors.catch_up().await?;
    let ctx = CommandContext::system("bench");
    let per_writer = events / writers.max(1);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..writers {
        let state = state.clone();
        let ctx = ctx.clone();
        handles.push(tokio::spawn(async move {
            let id = register(&state.bus, &ctx).await?;
            let mut lags = Vec::with_capacity(per_writer as usize);
            for i in 0..per_writer {
                let outcome = rename(&state.bus, &id, i, &ctx).await?;
                let appended = Instant::now();
                if let Some(commit) = outcome.commit() {
                    if !state
                        .hub
                        .wait_for("User", commit.checkpoint(), Duration::from_secs(10))
                        .await
                    {
                        anyhow::bail!("projection did not catch up within 10 s");
                    }
                    lags.push(appended.elapsed());
                }
            }
            anyhow::Ok(lags)
        }));
    }
    let mut lags = Vec::new();
    for h in handles {
        lags.extend(h.await??);
    }
    let elapsed = started.elapsed();
    lags.sort();
    println!(
        "projection-lag: {} events by {writers} writers in {:.2?} ({:.0} events/s)",
        lags.len(),
        elapsed,
        lags.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "append-to-visible lag: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lags, 0.50).as_secs_f64() * 1e3,
        percentile(&lags, 0.99).as_secs_f64() * 1e3,
        lags.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    for t in tasks {
        t.abort();
    }
    let _ = Arc::strong_count(&state.projectors);
    Ok(())
}
