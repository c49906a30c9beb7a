//! The `signalgate` binary: configuration and start-up at the edge, everything else in the
//! library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use signalgate::config::{Config, Settings};
use signalgate::server;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    version,
    about = "A WebRTC signaling gateway that notices a vanished peer in seconds."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once, at start-up")]
enum Command {
    /// Run the gateway. Settings: flags over SIGNALGATE_* environment variables over the
    /// --config TOML file over built-in defaults.
    Serve(ServeArgs),
    /// Development tokens (HS256), e.g. `signalgate token create --sub alice --room demo`.
    Token(signalgate::auth::token_cli::TokenArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML file with any of the settings below (keys are the flag names with underscores).
    #[arg(long, env = "SIGNALGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `signalgate=debug`.
    #[arg(
        long,
        env = "SIGNALGATE_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    log: String,

    #[command(flatten)]
    settings: Settings,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => {
            let token = signalgate::auth::token_cli::run(args, std::time::SystemTime::now())?;
            println!("{token}");
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log)
        .with_context(|| format!("--log {:?} is not a valid log filter", args.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let file = match &args.config {
        Some(path) => Settings::from_toml_file(path)?,
        None => Settings::default(),
    };
    let config = Config::try_from(args.settings.over(file))?;

    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let running = server::start(config).await?;
        print_banner(&running);
        let token = running.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: GoAway to every session");
            token.cancel();
        });
        running.run_until_stopped().await;
        anyhow::Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn print_banner(running: &server::Running) {
    let bound = running.bound();
    let identity = running.identity();
    let port = bound.listen.port();
    let host = match bound.listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        ip => ip.to_string(),
    };
    println!("signalgate {} is up", env!("CARGO_PKG_VERSION"));
    if let Some(http) = bound.http {
        println!("  demo page      http://localhost:{}/", http.port());
        println!("  WebSocket      ws://localhost:{}/ws", http.port());
    }
    println!("  WebSocket/TLS  wss://{host}:{port}/ws");
    for addr in &bound.webtransport {
        println!("  WebTransport   https://{addr}/wt");
    }
    if let Some(metrics) = bound.metrics {
        println!("  metrics        http://{metrics}/metrics");
    }
    let origin = if identity.was_generated() {
        "new development certificate"
    } else {
        "certificate"
    };
    println!("  {origin} sha256 {}", identity.leaf_sha256_hex());
    let config = running.config();
    if let Some(cluster) = &config.cluster {
        println!(
            "  cluster        node {} of {:?} through NATS {}",
            cluster.node,
            cluster.name,
            cluster.servers.join(",")
        );
    }
    println!(
        "  liveness: dead after {:?} of silence, probes every {:?}; resume window {:?}",
        config.hub.liveness.timeout(),
        config.hub.liveness.ping_interval(),
        config.hub.resume_window
    );
}
