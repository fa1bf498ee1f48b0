//! `augur token create|list|revoke`: API token management (admin role).

use std::process::ExitCode;
use std::time::Duration;

use augur_proto::v1 as pb;
use clap::Subcommand;

use crate::Output;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; prints its secret once (only its hash is stored).
    Create {
        /// admin, submitter or viewer.
        #[arg(long)]
        role: String,
        /// Unique name, shown in audit lines and as the owner of jobs it submits.
        #[arg(long)]
        name: String,
        /// Expire after this long, e.g. "30d" (default: never).
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<Duration>,
    },
    /// List tokens (names, roles, expiry; never secrets).
    List,
    /// Revoke a token by name; coordinators refuse it within a watch round trip.
    Revoke { name: String },
}

fn parse_expiry(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. \"30d\""))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{text:?} is shorter than one second"));
    }
    Ok(d)
}

fn time_text(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn token_json(t: &pb::Token) -> serde_json::Value {
    serde_json::json!({
        "name": t.name,
        "role": t.role,
        "created_at_ms": t.created_at_ms,
        "expires_at_ms": (t.expires_at_ms > 0).then_some(t.expires_at_ms),
        "created_by": t.created_by,
    })
}

pub async fn run(
    endpoint: &str,
    output: Output,
    command: TokenCommand,
) -> anyhow::Result<ExitCode> {
    let mut client = crate::connection::tokens(endpoint).await?;
    match command {
        TokenCommand::Create {
            role,
            name,
            expires,
        } => {
            let reply = client
                .create_token(pb::CreateTokenRequest {
                    name,
                    role,
                    expires_in_seconds: expires.map(|d| d.as_secs()).unwrap_or(0),
                })
                .await?
                .into_inner();
            let token = reply.token.unwrap_or_default();
            match output {
                Output::Json => {
                    let mut v = token_json(&token);
                    v["secret"] = serde_json::Value::String(reply.secret);
                    println!("{v}");
                }
                Output::Table => {
                    println!("{}", reply.secret);
                    eprintln!(
                        "token {:?} (role {}, expires {}) created; the secret above is shown only once",
                        token.name,
                        token.role,
                        time_text(token.expires_at_ms)
                    );
                }
            }
        }
        TokenCommand::List => {
            let tokens = client
                .list_tokens(pb::ListTokensRequest {})
                .await?
                .into_inner()
                .tokens;
            match output {
                Output::Json => {
                    let list: Vec<_> = tokens.iter().map(token_json).collect();
                    println!("{}", serde_json::Value::Array(list));
                }
                Output::Table => {
                    println!(
                        "{:<24} {:<10} {:<22} {:<22} CREATED BY",
                        "NAME", "ROLE", "CREATED", "EXPIRES"
                    );
                    for t in &tokens {
                        println!(
                            "{:<24} {:<10} {:<22} {:<22} {}",
                            t.name,
                            t.role,
                            time_text(t.created_at_ms),
                            time_text(t.expires_at_ms),
                            t.created_by
                        );
                    }
                }
            }
        }
        TokenCommand::Revoke { name } => {
            client
                .revoke_token(pb::RevokeTokenRequest { name: name.clone() })
                .await?;
            eprintln!("token {name:?} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
