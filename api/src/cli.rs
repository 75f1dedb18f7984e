//! The `control-plane` command line.

use std::io::Write;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "control-plane",
    version,
    about = "Control plane for AI voice agents"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Applies pending migrations, then serves the HTTP API and runs the background workers
    /// (projectors, health refresher, summary/sentiment, dialer) in this process.
    Serve,
    /// Applies pending migrations and exits.
    Migrate,
    /// Prints the OpenAPI document of every public endpoint (what `/openapi.json` serves) and
    /// exits; needs no database.
    Openapi,
    /// Adds a user with a password to an establishment with a role (creating the user when the
    /// e-mail has no account yet), for operators and scripts; the invitation flow is the UI's way.
    AddMember {
        #[arg(long)]
        email: String,
        /// At least 8 characters.
        #[arg(long, env = "MEMBER_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long)]
        establishment: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
    },
    /// Read models built from the event log.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Integration credentials at rest (envelope encryption; docs/integrations.md).
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Benchmarks of the event store (see docs/benchmarks.md) and of runtimes
    /// (docs/runtimes.md).
    Bench {
        #[command(subcommand)]
        command: crate::bench::BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-wraps every integration's data key under a new master key (base64 of 32 bytes),
    /// unwrapping with SECRETS_KEY or SECRETS_KEY_PREVIOUS; sealed credentials and events are
    /// not touched. Then set SECRETS_KEY to the new key (and the old one in
    /// SECRETS_KEY_PREVIOUS until every process runs with the new key). Passing the current
    /// key re-wraps whatever is still under a previous one.
    Rotate {
        /// The new master key (base64 of 32 bytes).
        #[arg(long, env = "SECRETS_NEW_KEY", hide_env_values = true)]
        new_key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuilds read models from the event log, with progress, and exits.
    Rebuild {
        /// Rebuild every projection.
        #[arg(long)]
        all: bool,
        /// Names of the projections to rebuild (see `projections list`).
        names: Vec<String>,
    },
    /// Lists the projections and their checkpoints.
    List,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => crate::server::serve(cli.config).await,
        Command::Migrate => {
            let pool = crate::db::connect(&cli.config).await?;
            crate::db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Openapi => {
            let doc = serde_json::to_string_pretty(&crate::http::openapi_document())?;
            match writeln!(std::io::stdout().lock(), "{doc}") {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Command::AddMember {
            email,
            password,
            establishment,
            role,
        } => add_member(cli.config, &email, &password, &establishment, &role).await,
        Command::Projections { command } => projections(cli.config, command).await,
        Command::Bench { command } => crate::bench::run(cli.config, command).await,
        Command::Secrets {
            command: SecretsCommand::Rotate { new_key },
        } => {
            let pool = crate::db::connect(&cli.config).await?;
            crate::db::migrate(&pool).await?;
            let keyring = crate::secrets::Keyring::from_config(&cli.config)?;
            let new = crate::secrets::MasterKey::parse(&new_key)?;
            let done = crate::secrets::rotate_master_key(&pool, &keyring, &new).await?;
            println!(
                "re-wrapped {} data keys under master key {} ({} were already under it)",
                done.rewrapped, new.id, done.already_current
            );
            Ok(())
        }
    }
}

async fn projections(config: Config, command: ProjectionsCommand) -> anyhow::Result<()> {
    let pool = crate::db::connect(&config).await?;
    crate::db::migrate(&pool).await?;
    let all = crate::state::projections();
    match command {
        ProjectionsCommand::List => {
            for p in &all {
                let cp: Option<(String, i64, i64)> = sqlx::query_as(
                    "SELECT last_txid::text, last_position, events_applied FROM projector_checkpoints WHERE name = $1",
                )
                .bind(p.name())
                .fetch_optional(&pool)
                .await?;
                let (txid, pos, n) = cp.unwrap_or(("0".into(), 0, 0));
                println!(
                    "{:<20} tables={:<60} checkpoint=({txid},{pos}) applied={n}",
                    p.name(),
                    p.tables().join(",")
                );
            }
            Ok(())
        }
        ProjectionsCommand::Rebuild { all: every, names } => {
            if !every && names.is_empty() {
                anyhow::bail!("name the projections to rebuild, or pass --all");
            }
            for name in &names {
                if !all.iter().any(|p| p.name() == name) {
                    anyhow::bail!(
                        "unknown projection {name:?}; known: {}",
                        all.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
                    );
                }
            }
            for p in all
                .iter()
                .filter(|p| every || names.iter().any(|n| n == p.name()))
            {
                let started = std::time::Instant::now();
                let name = p.name();
                let n = projections::runner::rebuild(&pool, p.as_ref(), 1000, |done, total| {
                    let pct = if total == 0 {
                        100.0
                    } else {
                        done as f64 * 100.0 / total as f64
                    };
                    eprint!("\r{name}: {done}/{total} events ({pct:.0}%)");
                    let _ = std::io::stderr().flush();
                })
                .await?;
                eprintln!();
                println!(
                    "{name}: rebuilt from {n} events in {:.1?}",
                    started.elapsed()
                );
            }
            Ok(())
        }
    }
}

async fn add_member(
    config: Config,
    email: &str,
    password: &str,
    establishment_id: &str,
    role: &str,
) -> anyhow::Result<()> {
    use aggregates::establishment::{Establishment, EstablishmentCommand};
    use aggregates::user::{User, UserCommand, EMAIL_CLAIM};

    use crate::store::{CommandBus, CommandContext, EventStore, ExecOptions};
    let email: aggregates::common::Email = email.parse()?;
    let role: aggregates::common::Role = role.parse()?;
    crate::auth::password::check_policy(password)?;
    let pool = crate::db::connect(&config).await?;
    crate::db::migrate(&pool).await?;
    let bus = CommandBus::new(EventStore::new(pool, projections::Hub::default()));
    let ctx = CommandContext::system("cli").in_establishment(establishment_id);
    let user_id = match bus.store().claim_owner(EMAIL_CLAIM, email.as_str()).await? {
        Some(id) => id,
        None => {
            let id = crate::ids::new_id("usr");
            bus.execute::<User>(
                &id,
                UserCommand::Register {
                    user_id: id.clone(),
                    email: email.clone(),
                    display_name: email.as_str().split('@').next().unwrap_or("user").into(),
                    password_hash: Some(crate::auth::password::hash(password).await?),
                    platform_admin: false,
                },
                &ctx,
                ExecOptions::default().fresh(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            id
        }
    };
    bus.execute::<Establishment>(
        establishment_id,
        EstablishmentCommand::AddMember {
            user_id: user_id.clone(),
            role,
        },
        &ctx,
        ExecOptions::default(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{user_id} is {role} of {establishment_id}");
    Ok(())
}
