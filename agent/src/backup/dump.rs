//! Running PostgreSQL client tools as child processes: password through the environment
//! (never the command line), stdout streamed, the tail of stderr kept for error messages.

use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;

use crate::config::TargetConfig;
use crate::error::AgentError;
use crate::pgtools::Tool;

const STDERR_TAIL: usize = 4096;

/// A running tool.
pub struct Running {
    pub name: String,
    pub child: Child,
    stderr: JoinHandle<String>,
}

/// Connection arguments for a target and database.
pub fn conn_args(t: &TargetConfig, dbname: &str) -> Vec<String> {
    vec![
        "-h".into(),
        t.host.clone(),
        "-p".into(),
        t.port.to_string(),
        "-U".into(),
        t.user.clone(),
        "-d".into(),
        dbname.into(),
        "--no-password".into(),
    ]
}

/// Spawn `tool args...`; stdin and stdout are piped if asked.
pub fn spawn(
    tool: &Tool,
    args: &[String],
    password: Option<&str>,
    stdin: bool,
    stdout: bool,
) -> Result<Running, AgentError> {
    spawn_with(tool, args, password, (stdin, stdout), &[])
}

/// [`spawn`] with more environment variables (`PGAPPNAME`...).
pub fn spawn_with(
    tool: &Tool,
    args: &[String],
    password: Option<&str>,
    (stdin, stdout): (bool, bool),
    env: &[(&str, &str)],
) -> Result<Running, AgentError> {
    let name = tool
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cmd = Command::new(&tool.path);
    cmd.args(args)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .env("PGCONNECT_TIMEOUT", "15")
        .env_remove("PGPASSWORD")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| AgentError::from(format!("start {} ({}): {e}", name, tool.path.display())))?;
    widen_pipes(&child);
    let stderr = child.stderr.take().expect("stderr piped");
    Ok(Running {
        name,
        child,
        stderr: tokio::spawn(tail(stderr)),
    })
}

/// Pipes of 1 MiB instead of 64 KiB (Linux): the dump tool then blocks, and the agent
/// wakes, several times less often per GB. Best effort: a host whose
/// `fs.pipe-max-size` is lower keeps its default.
pub(crate) fn widen_pipes(child: &tokio::process::Child) {
    #[cfg(target_os = "linux")]
    {
        const SIZE: usize = 1 << 20;
        if let Some(out) = &child.stdout {
            let _ = rustix::pipe::fcntl_setpipe_size(out, SIZE);
        }
        if let Some(inp) = &child.stdin {
            let _ = rustix::pipe::fcntl_setpipe_size(inp, SIZE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = child;
}

async fn tail(mut r: ChildStderr) -> String {
    let mut kept: Vec<u8> = vec![];
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
        }
    }
    let start = kept.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&kept[start..]).trim().to_string()
}

impl Running {
    /// Wait for exit. Ok(stderr) on status 0; otherwise an error quoting stderr.
    pub async fn finish(mut self) -> Result<String, AgentError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| AgentError::from(format!("wait for {}: {e}", self.name)))?;
        let err = self.stderr.await.unwrap_or_default();
        if status.success() {
            Ok(err)
        } else {
            let quoted = if err.is_empty() {
                "(no error output)".to_string()
            } else {
                err
            };
            Err(format!("{} failed ({status}): {quoted}", self.name).into())
        }
    }
}
