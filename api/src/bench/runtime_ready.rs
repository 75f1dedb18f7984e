//! `control-plane bench runtime-ready`: provision-to-ready time of a runtime (docs/runtimes.md).
//! Each run creates an establishment, provisions its runtime, starts it at once and waits
//! until the read model shows it running and ready; the container is removed afterwards.

use std::time::{Duration, Instant};

use aggregates::establishment::{Establishment, EstablishmentCommand};
use aggregates::runtime::RuntimeCommand;

use crate::application::runtimes::ProvisionInput;
use crate::config::Config;
use crate::store::{CommandContext, ExecOptions};

fn api(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

struct Run {
    provisioned: Duration,
    created: Duration,
    running: Duration,
    ready: Duration,
}

pub async fn runtime_ready(mut config: Config, runs: u32, image: String) -> anyhow::Result<()> {
    config.listen_addr = "127.0.0.1:0".parse()?;
    let app = crate::server::start(config).await?;
    let state = app.state.clone();
    let mut results = Vec::new();
    for i in 0..runs {
        let est = crate::ids::new_id("est");
        let ctx = CommandContext::system("bench").in_establishment(&est);
        let outcome = state
            .bus
            .execute::<Establishment>(
                &est,
                EstablishmentCommand::Create {
                    establishment_id: est.clone(),
                    name: format!("bench runtime-ready {i}"),
                    timezone: "UTC".parse()?,
                    locale: "en".parse()?,
                    created_by: "usr_bench".into(),
                },
                &ctx,
                ExecOptions::default(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        state.bus.visible(&outcome).await;

        let t0 = Instant::now();
        let input = ProvisionInput::parse(&image, None, None).map_err(api)?;
        let rt = state
            .runtime_management
            .provision(&ctx, &est, input)
            .await
            .map_err(api)?;
        let provisioned = t0.elapsed();
        let spec = rt.spec.clone().expect("provisioned");
        state
            .runtime_management
            .lifecycle(&ctx, &spec.runtime_id, RuntimeCommand::Start)
            .await
            .map_err(api)?;
        let (mut created, mut running) = (None, None);
        let deadline = t0 + Duration::from_secs(60);
        let ready = loop {
            let row = projections::runtimes::by_id(&state.pool, &spec.runtime_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("runtime {} vanished", spec.runtime_id))?;
            let (status, ready, container) = (row.status, row.ready, row.container_id);
            if container.is_some() && created.is_none() {
                created = Some(t0.elapsed());
            }
            if status == "running" && running.is_none() {
                running = Some(t0.elapsed());
            }
            if status == "running" && ready {
                break t0.elapsed();
            }
            if status == "failed" || Instant::now() > deadline {
                anyhow::bail!(
                    "runtime {} did not become ready (status {status})",
                    spec.runtime_id
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let run = Run {
            provisioned,
            created: created.unwrap_or(ready),
            running: running.unwrap_or(ready),
            ready,
        };
        println!(
            "run {}: provision answered {:>6.1} ms, container created {:>6.1} ms, running {:>6.1} ms, ready {:>6.1} ms",
            i + 1,
            ms(run.provisioned),
            ms(run.created),
            ms(run.running),
            ms(run.ready)
        );
        results.push(run);
        state
            .runtimes
            .docker
            .remove(&spec.container_name)
            .await
            .map_err(|e| anyhow::anyhow!("cleanup: {e}"))?;
    }
    let mut ready: Vec<Duration> = results.iter().map(|r| r.ready).collect();
    ready.sort();
    if let (Some(min), Some(max)) = (ready.first(), ready.last()) {
        let median = ready[ready.len() / 2];
        println!(
            "provision-to-ready over {} runs: median {:.1} ms, min {:.1} ms, max {:.1} ms ({})",
            ready.len(),
            ms(median),
            ms(*min),
            ms(*max),
            if *max < Duration::from_secs(2) {
                "every run under the 2 s goal"
            } else {
                "OVER the 2 s goal"
            }
        );
    }
    app.stop().await;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
