//! Trust commands: `ca show`, `token create`, `agents list|revoke`, `recovery-key create`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use nex_backup_shared::keyring::write_private_file;
use nex_backup_shared::pb;
use nex_backup_shared::recovery::RecoverySecret;
use serde_json::json;

use super::ClientOpts;
use super::client::connect;
use super::format::{age, table, time};
use crate::pki::{Pki, ServerCertSource, unix_now};
use nex_backup_shared::clock::now_ms;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the fingerprint agents pin at enrollment (`--ca-fingerprint`).
    Show {
        #[arg(long, env = "NEX_DATA_DIR")]
        data_dir: PathBuf,
        /// The operator-provided server chain, if `serve` uses one.
        #[arg(long)]
        tls_cert: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a single-use enrollment token for a site and print it.
    Create {
        #[arg(long)]
        site: String,
        /// How long the token stays valid, e.g. 24h, 30m, 7d.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        expires: Duration,
        /// Let this token re-enroll an existing agent id (a rebuilt host), replacing
        /// that agent's identity; without it an existing id is refused.
        #[arg(long)]
        replace_agent: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Every enrolled agent: site, id, last seen, certificate expiry, version.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Cut the agent's session and refuse its certificate from now on.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Agent id.
    pub id: String,
    /// Site, when the same agent id is enrolled at several sites.
    #[arg(long)]
    pub site: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Debug, Subcommand)]
pub enum RecoveryKeyCommand {
    /// Create an X25519 recovery key pair; the private key goes to FILE (0600), the
    /// public key is printed for `serve --recovery-key`.
    Create {
        #[arg(long)]
        out: PathBuf,
    },
}

pub use crate::policy::durations::{BadValue, parse_duration, parse_duration_or_zero};

/// `--history-keep`: "0" (forever) or at least 30 days, so that a slip such as "40m"
/// cannot wipe the job history alerts and reports read.
pub fn parse_history_keep(s: &str) -> Result<Duration, BadValue> {
    let d = parse_duration_or_zero(s)?;
    if !d.is_zero() && d < Duration::from_secs(30 * 24 * 3600) {
        return Err(BadValue(format!(
            "{s:?}: history is kept at least 30d (or give 0 to keep it forever)"
        )));
    }
    Ok(d)
}

pub fn ca(c: CaCommand) -> anyhow::Result<ExitCode> {
    let CaCommand::Show { data_dir, tls_cert } = c;
    let src = ServerCertSource {
        names: vec![],
        key_file: None,
        cert_file: tls_cert,
    };
    let fp = Pki::show(&data_dir, &src)
        .context("read the controller CA (has `nex-backup serve` run with this data dir?)")?;
    println!("{fp}");
    Ok(ExitCode::SUCCESS)
}

pub async fn token(c: TokenCommand) -> anyhow::Result<ExitCode> {
    let TokenCommand::Create {
        site,
        expires,
        replace_agent,
        client,
    } = c;
    let resp = connect(&client)
        .await?
        .create_token(pb::CreateTokenRequest {
            site: site.clone(),
            ttl_secs: expires.as_secs(),
            replace_agent: replace_agent.unwrap_or_default(),
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    if client.json {
        println!(
            "{}",
            json!({"site": site, "token": resp.token, "expires_unix_ms": resp.expires_unix_ms})
        );
    } else {
        println!("{}", resp.token);
        eprintln!(
            "single-use enrollment token for site {site}, valid until {}",
            time(resp.expires_unix_ms)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn agents(c: AgentsCommand) -> anyhow::Result<ExitCode> {
    match c {
        AgentsCommand::List { client } => {
            let resp = connect(&client)
                .await?
                .list_agents(pb::ListAgentsRequest {})
                .await
                .map_err(|s| anyhow!("{}", s.message()))?
                .into_inner();
            print_agents(&resp.agents, client.json);
        }
        AgentsCommand::Revoke(a) => {
            let resp = connect(&a.client)
                .await?
                .revoke_agent(pb::RevokeAgentRequest {
                    site: a.site.clone().unwrap_or_default(),
                    agent_id: a.id.clone(),
                })
                .await
                .map_err(|s| anyhow!("{}", s.message()))?
                .into_inner();
            println!(
                "agent {} of site {} revoked: its session is cut and its certificate refused",
                resp.agent_id, resp.site
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_agents(agents: &[pb::AgentInfo], as_json: bool) {
    if as_json {
        let v: Vec<_> = agents.iter().map(|a| json!({
            "site": a.site, "agent_id": a.agent_id, "version": a.version, "online": a.online,
            "last_seen_unix_ms": a.last_seen_unix_ms, "cert_not_after_unix": a.cert_not_after_unix,
            "cert_serial": a.cert_serial, "revoked": a.revoked, "enrolled_unix_ms": a.enrolled_unix_ms,
            "health": super::format::health_json(a.health.as_ref()),
        })).collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    let now = now_ms();
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let left = a.cert_not_after_unix - unix_now();
            let state = if a.revoked {
                "revoked"
            } else if a.online {
                "online"
            } else {
                "offline"
            };
            vec![
                a.site.clone(),
                a.agent_id.clone(),
                state.into(),
                age(now, a.last_seen_unix_ms),
                format!(
                    "{} ({})",
                    time(a.cert_not_after_unix as u64 * 1000),
                    if left > 0 {
                        format!("in {}", age(left as u64 * 1000 + 1, 1))
                    } else {
                        "expired".into()
                    }
                ),
                if a.version.is_empty() {
                    "-".into()
                } else {
                    a.version.clone()
                },
                super::format::health(a.health.as_ref()),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "SITE",
                "AGENT",
                "STATE",
                "LAST SEEN",
                "CERT EXPIRES",
                "VERSION",
                "HOST"
            ],
            &rows
        )
    );
}

pub fn recovery_key(c: RecoveryKeyCommand) -> anyhow::Result<ExitCode> {
    let RecoveryKeyCommand::Create { out } = c;
    if out.exists() {
        return Err(anyhow!(
            "{} already exists; refusing to overwrite a recovery key",
            out.display()
        ));
    }
    let secret = RecoverySecret::generate();
    write_private_file(&out, secret.to_file_text().as_bytes())
        .with_context(|| format!("write {}", out.display()))?;
    let public = secret.public();
    println!("{public}");
    eprintln!(
        "recovery key {} written to {} (0600). Keep that file offline; configure the\n\
         controller with: nex-backup serve --recovery-key {public}",
        public.fingerprint(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        let bare = parse_duration("24").unwrap_err();
        assert!(
            bare.0.contains("needs a unit") && bare.0.contains("24h"),
            "{bare}"
        );
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .0
                .contains("longer than zero")
        );
        assert!(parse_duration("soon").is_err());
    }
}
