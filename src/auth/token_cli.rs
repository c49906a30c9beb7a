//! `signalgate token create`: prints an HS256 token (for development and tests).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::settings::load_secret;
use super::{AuthSettingsError, MintError, SecretString, TokenSpec, mint_hs256};

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 1h or 15m: {e}"))
}

/// Development tokens signed with the gateway's HS256 secret.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Print a new HS256 token on stdout. The secret comes from --secret-file, --secret or
    /// the gateway's SIGNALGATE_AUTH_HS256_SECRET(_FILE); audience and issuer default to the
    /// gateway's SIGNALGATE_AUTH_AUDIENCE / SIGNALGATE_AUTH_ISSUER.
    Create(CreateArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The identity (`sub`), 1 to 128 bytes.
    #[arg(long, value_name = "SUB")]
    pub sub: String,

    /// A room the token grants (repeatable): `demo` that room, `team-*` every room whose name
    /// starts with `team-`, `*` every room.
    #[arg(long = "room", value_name = "ROOM", required = true)]
    pub rooms: Vec<String>,

    /// Lifetime from now (1s to 366 days).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,

    /// Device (`device`): one session per identity and device.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,

    /// Display name (`name`) peers see.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Any JSON value peers see as `metadata`, e.g. '{"role":"host"}'.
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,

    /// The token may not send signals (`"signal": false`).
    #[arg(long)]
    pub no_signal: bool,

    /// Audience (`aud`).
    #[arg(long, env = "SIGNALGATE_AUTH_AUDIENCE", value_name = "AUD")]
    pub audience: Option<String>,

    /// Issuer (`iss`).
    #[arg(long, env = "SIGNALGATE_AUTH_ISSUER", value_name = "ISS")]
    pub issuer: Option<String>,

    /// The HS256 secret (at least 32 bytes). Prefer --secret-file: a command line is visible
    /// to other users.
    #[arg(
        long,
        env = "SIGNALGATE_AUTH_HS256_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub secret: Option<SecretString>,

    /// File holding the HS256 secret (trailing newlines are ignored).
    #[arg(long, env = "SIGNALGATE_AUTH_HS256_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenCliError {
    #[error(transparent)]
    Secret(#[from] AuthSettingsError),
    #[error(
        "no secret: give --secret-file FILE, --secret, or set SIGNALGATE_AUTH_HS256_SECRET(_FILE)"
    )]
    NoSecret,
    #[error("--metadata is not JSON: {0}")]
    Metadata(String),
    #[error(transparent)]
    Mint(#[from] MintError),
}

/// Runs a `token` subcommand; returns what to print on stdout.
pub fn run(args: TokenArgs, now: SystemTime) -> Result<String, TokenCliError> {
    match args.command {
        TokenCommand::Create(create) => create_token(create, now),
    }
}

fn create_token(args: CreateArgs, now: SystemTime) -> Result<String, TokenCliError> {
    let secret = load_secret(
        args.secret.as_ref(),
        args.secret_file.as_deref(),
        ("--secret", "--secret-file"),
    )?
    .ok_or(TokenCliError::NoSecret)?;
    let metadata = args
        .metadata
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| TokenCliError::Metadata(e.to_string()))?;
    let spec = TokenSpec {
        sub: args.sub,
        rooms: args.rooms,
        ttl: args.ttl,
        device: args.device,
        name: args.name,
        metadata,
        signal: !args.no_signal,
        audience: args.audience,
        issuer: args.issuer,
    };
    Ok(mint_hs256(&secret, &spec, now)?)
}
