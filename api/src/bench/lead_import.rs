//! `control-plane bench lead-import`: a CSV of N rows (local-format São Paulo mobiles, a few
//! bad and duplicate rows) imported into a new establishment, timed from the upload to the
//! completed job visible in the read model (docs/benchmarks.md §6).

use std::time::{Duration, Instant};

use aggregates::establishment::{Establishment, EstablishmentCommand};

use crate::config::Config;
use crate::store::{CommandContext, ExecOptions};

/// The benchmark CSV: `rows` rows, one in 50 a duplicate, one in 100 not a number.
pub fn csv(rows: usize) -> String {
    let mut s = String::with_capacity(rows * 48);
    s.push_str("phone;name;email;plan\n");
    for i in 0..rows {
        if i % 100 == 99 {
            s.push_str(&format!("12-{i};Bad {i};;\n"));
        } else if i % 50 == 49 {
            let j = i - 1;
            s.push_str(&format!(
                "+55 11 9{:04}-{:04};Dup {i};;\n",
                j / 10000,
                j % 10000
            ));
        } else {
            s.push_str(&format!(
                "(11) 9{:04}-{:04};Lead {i};lead{i}@example.com;gold\n",
                i / 10000,
                i % 10000
            ));
        }
    }
    s
}

pub async fn lead_import(mut config: Config, rows: usize) -> anyhow::Result<()> {
    config.listen_addr = "127.0.0.1:0".parse()?;
    let app = crate::server::start(config).await?;
    let state = app.state.clone();
    let est = crate::ids::new_id("est");
    let ctx = CommandContext::system("bench").in_establishment(&est);
    let outcome = state
        .bus
        .execute::<Establishment>(
            &est,
            EstablishmentCommand::Create {
                establishment_id: est.clone(),
                name: "bench lead-import".into(),
                timezone: "America/Sao_Paulo".parse()?,
                locale: "pt-BR".parse()?,
                created_by: "usr_bench".into(),
            },
            &ctx,
            ExecOptions::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    state.bus.visible(&outcome).await;
    let body = csv(rows);
    let bytes = body.len();

    let parse_started = Instant::now();
    let parsed = crate::application::leads::parse_csv(body.as_bytes(), Some("BR"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let parse = parse_started.elapsed();

    let started = Instant::now();
    let job = state
        .leads
        .import(
            "usr_bench",
            "req_bench",
            &est,
            "bench.csv",
            bytes::Bytes::from(body),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let accepted = started.elapsed();
    let row = loop {
        if let Some(r) = projections::leads::import(&state.pool, &job).await? {
            if r.status == "completed" || r.status == "failed" {
                break r;
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("the import did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let total = started.elapsed();
    let leads: i64 = projections::leads::phones_of(&state.pool, &est)
        .await?
        .len() as i64;
    println!(
        "lead-import: {rows} rows ({:.1} MB): accepted in {:.0} ms, completed and projected in {:.2} s ({:.0} rows/s); parse alone {:.0} ms",
        bytes as f64 / 1e6,
        accepted.as_secs_f64() * 1e3,
        total.as_secs_f64(),
        rows as f64 / total.as_secs_f64(),
        parse.as_secs_f64() * 1e3,
    );
    println!(
        "job {}: status {}, imported {}, duplicate {}, rejected {}; {leads} leads in the read model (parser: {} leads) — {}",
        row.job_id,
        row.status,
        row.rows_imported,
        row.rows_duplicate,
        row.rows_rejected,
        parsed.leads.len(),
        if total <= Duration::from_secs(5) { "within the 5 s target" } else { "OVER the 5 s target" }
    );
    app.stop().await;
    Ok(())
}
