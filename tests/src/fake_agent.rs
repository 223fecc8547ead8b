//! A raw agent session over the real gRPC API, driven by a test as an attacker (or a
//! minimal honest agent) would: hello, read what the controller sends, send job events.
//! With [`dispatch_backup`] a test obtains a job the controller really dispatched, so it
//! can commit as that job or try to commit outside one.

use std::time::Duration;

use nex_backup_shared::pb::{self, agent_message::Msg, controller_message::Msg as Down};
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::inproc::{Identity, InProc};

/// An open session of one agent identity.
pub struct FakeAgent {
    pub site: String,
    pub agent_id: String,
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: Streaming<pb::ControllerMessage>,
}

/// A backup job the controller dispatched to a [`FakeAgent`].
#[derive(Debug, Clone)]
pub struct Dispatched {
    pub job_id: String,
    pub snapshot_id: String,
    pub target: String,
}

impl FakeAgent {
    /// Open a session as `id`, declaring `targets` and reporting `version`; the welcome is
    /// read. Panics if the controller refuses.
    pub async fn connect(s: &InProc, id: &Identity, targets: &[&str], version: &str) -> Self {
        Self::try_connect(s, id, targets, version).await.unwrap()
    }

    pub async fn try_connect(
        s: &InProc,
        id: &Identity,
        targets: &[&str],
        version: &str,
    ) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(pb::AgentMessage {
            msg: Some(Msg::Hello(pb::Hello {
                site: id.site.clone(),
                agent_id: id.agent_id.clone(),
                version: version.into(),
                targets: targets
                    .iter()
                    .map(|t| pb::TargetInfo {
                        name: (*t).into(),
                        kind: "postgres".into(),
                    })
                    .collect(),
                known_jobs: vec![],
            })),
        })
        .await
        .unwrap();
        let mut inbound = s
            .agent(id)
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = inbound.message().await?;
        assert!(
            matches!(
                first,
                Some(pb::ControllerMessage {
                    msg: Some(Down::Welcome(_))
                })
            ),
            "a session starts with a welcome"
        );
        Ok(FakeAgent {
            site: id.site.clone(),
            agent_id: id.agent_id.clone(),
            tx,
            inbound,
        })
    }

    /// The next command sent down the session (skipping acks), within 10 s.
    pub async fn next_command(&mut self) -> pb::Command {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
                .await
                .expect("a command within 10 s")
                .expect("session open")
                .expect("session not closed");
            if let Some(Down::Command(c)) = m.msg {
                return c;
            }
        }
    }

    /// Whether the controller ended this session within `secs` (a message other than an
    /// acknowledgement, or nothing at all within the time, is `false`).
    pub async fn ended_within(&mut self, secs: u64) -> bool {
        loop {
            match tokio::time::timeout(Duration::from_secs(secs), self.inbound.message()).await {
                Err(_) => return false,
                Ok(Ok(None)) | Ok(Err(_)) => return true,
                Ok(Ok(Some(pb::ControllerMessage {
                    msg: Some(Down::AckJob(_)),
                }))) => continue,
                Ok(Ok(Some(_))) => return false,
            }
        }
    }

    /// Send a job event.
    pub async fn send_event(&self, job_id: &str, event: pb::job_event::Event) {
        self.tx
            .send(pb::AgentMessage {
                msg: Some(Msg::JobEvent(pb::JobEvent {
                    job_id: job_id.into(),
                    event: Some(event),
                })),
            })
            .await
            .unwrap();
    }
}

/// Have the operator start a backup of `target` and return the job the controller sent
/// to `agent` (the admin call keeps running in the background).
pub async fn dispatch_backup(s: &InProc, agent: &mut FakeAgent, target: &str) -> Dispatched {
    let mut admin = s.admin();
    let req = s.admin_request(pb::RunBackupRequest {
        site: agent.site.clone(),
        target: target.into(),
        outside_window: true,
    });
    tokio::spawn(async move {
        if let Ok(resp) = admin.run_backup(req).await {
            let mut updates = resp.into_inner();
            while let Ok(Some(_)) = updates.message().await {}
        }
    });
    let cmd = agent.next_command().await;
    let Some(pb::command::Kind::Backup(b)) = cmd.kind else {
        panic!("expected a backup command, got {cmd:?}");
    };
    Dispatched {
        job_id: cmd.job_id,
        snapshot_id: b.snapshot_id,
        target: b.target,
    }
}

/// A commit of `chunks` (sealed manifest `manifest`) as job `d`, with sizes that fit.
pub fn commit_request(
    site: &str,
    d: &Dispatched,
    manifest: Vec<u8>,
    chunks: &[&nex_backup_shared::chunk::SealedChunk],
    logical_bytes: u64,
) -> pb::CommitSnapshotRequest {
    pb::CommitSnapshotRequest {
        site: site.into(),
        target: d.target.clone(),
        snapshot_id: d.snapshot_id.clone(),
        job_id: d.job_id.clone(),
        manifest,
        chunk_ids: chunks.iter().map(|c| c.id.0.to_vec()).collect(),
        logical_bytes,
        started_unix_ms: 1,
        duration_ms: 1,
        chunk_refs: chunks.len() as u64,
        streams: 1,
    }
}
