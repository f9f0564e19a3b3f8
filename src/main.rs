//! The `mirrorgate` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mirrorgate::Config;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (`_RJEM_MALLOC_CONF` in the environment still overrides them). Two
/// arenas (one a core here; the default is four a core), freed pages handed back after 100 ms
/// by a background thread instead of kept 10 s: peak RSS with 64 concurrent 64 MiB streams
/// through two hops went from A 71-75 / B 68-77 MiB to A 57 / B 49-50 MiB. Decay 0 did better
/// still (B 44 MiB) but page-faulted every buffer again: +50% CPU on a 1 GiB download.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8; 69] =
    b"narenas:2,background_thread:true,dirty_decay_ms:100,muzzy_decay_ms:0\0";

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
    /// The status of a running site and its peers, worst problem first; exits 2 when a peer
    /// is behind.
    Status {
        /// The site's config file (its URL, TLS and token client).
        #[arg(long, conflicts_with = "url")]
        config: Option<PathBuf>,
        /// The site's URL (a bearer token may come from MIRRORGATE_TOKEN).
        #[arg(long)]
        url: Option<String>,
        /// Refresh every two seconds until interrupted.
        #[arg(long)]
        watch: bool,
        /// A peer whose oldest pending order is older than this is behind (default: the
        /// site's DR RPO threshold).
        #[arg(long)]
        behind_secs: Option<u64>,
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
                    Command::Status {
                        config,
                        url,
                        watch,
                        behind_secs,
                    } => status(config, url, watch, behind_secs).await,
                }
            })
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<Behind>() => {
            eprintln!("mirrorgate: {e:#}");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("mirrorgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `mirrorgate status`: an error when a peer is behind, so the exit status says so.
async fn status(
    config: Option<PathBuf>,
    url: Option<String>,
    watch: bool,
    behind_secs: Option<u64>,
) -> anyhow::Result<()> {
    use mirrorgate::cli::status::{run, Source};
    let source = match (config, url) {
        (_, Some(url)) => Source::from_url(&url)?,
        (Some(path), None) => Source::from_config(&Config::load(&path)?).await?,
        (None, None) => Source::from_url("http://127.0.0.1:8080")?,
    };
    if run(&source, watch, behind_secs).await? {
        Ok(())
    } else {
        Err(anyhow::Error::new(Behind))
    }
}

/// A peer is behind: exit status 2 (1 is for errors).
#[derive(Debug)]
struct Behind;

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a peer is behind")
    }
}

impl std::error::Error for Behind {}

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
