//! The `mirrorgate` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mirrorgate::Config;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "mirrorgate",
    version,
    about = "Multi-site object replication proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one site (without --config: one site on 127.0.0.1:8080, data under ./data).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Register the objects already in a backend bucket (size and SHA-256), creating the
    /// bucket if needed; objects already registered are skipped.
    Import {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        bucket: String,
        /// Owner of the bucket when the import creates it.
        #[arg(long, default_value = "import")]
        client_id: String,
    },
    /// Replication definitions (the site must be serving).
    Definitions {
        #[command(subcommand)]
        action: DefinitionsAction,
    },
}

#[derive(Subcommand)]
enum DefinitionsAction {
    /// Start a run of a definition and follow it with a progress bar until it ends.
    Run {
        name: String,
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,hyper=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                match cli.command {
                    Command::Serve { config } => {
                        let config = match config {
                            Some(path) => Config::load(&path)?,
                            None => Config::default(),
                        };
                        mirrorgate::run(config, shutdown_signal()).await
                    }
                    Command::Import {
                        config,
                        bucket,
                        client_id,
                    } => {
                        let config = Config::load(&config)?;
                        let summary =
                            mirrorgate::core::import::import_bucket(&config, &bucket, &client_id)
                                .await?;
                        println!("{bucket}: {summary}");
                        Ok(())
                    }
                    Command::Definitions {
                        action: DefinitionsAction::Run { name, config },
                    } => mirrorgate::cli::definitions::run(&Config::load(&config)?, &name).await,
                }
            })
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mirrorgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
