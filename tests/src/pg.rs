//! Throwaway PostgreSQL clusters (recipe B of TESTING-COMPONENTS.md): `initdb` and
//! `postgres` run as the `postgres` OS user when the harness is root, the cluster lives
//! under /tmp, the socket directory is private, TCP listens on 127.0.0.1 with
//! scram-sha-256 passwords, and Drop stops the server and removes everything.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{free_port, wait_for};

/// The superuser password of every test cluster.
pub const PASSWORD: &str = "nexb-test-pw";

/// Directory holding initdb, postgres, psql, pg_dump...: `$NEX_PG_BIN`, or the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("NEX_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|(_, p)| p)
        .expect("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install postgresql (the README's test command does) or set NEX_PG_BIN")
}

fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric id")
}

/// A running cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    pub bin: PathBuf,
}

impl PgCluster {
    /// The server's main process (its backends are its children).
    pub fn postmaster_pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start() -> PgCluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("nexpg")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let as_root = id(&["-u"]) == 0;
        let ids = as_root.then(|| (id(&["-u", "postgres"]), id(&["-g", "postgres"])));
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown cluster dir");
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("write pwfile");
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown pwfile");
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .current_dir("/tmp");
        let out = as_user(&mut initdb, ids).output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("pg.log")).expect("log file");
        let mut pg = Command::new(bin.join("postgres"));
        pg.arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .args([
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=50",
            ])
            .current_dir("/tmp")
            .stdout(Stdio::null())
            .stderr(log);
        let child = as_user(&mut pg, ids).spawn().expect("start postgres");
        let cluster = PgCluster {
            dir,
            child,
            port,
            bin,
        };
        wait_for("postgres to accept connections", 30, || {
            let ok = Command::new(cluster.bin.join("pg_isready"))
                .args(["-q", "-h"])
                .arg(cluster.socket_dir())
                .args(["-p", &port.to_string()])
                .status();
            ok.is_ok_and(|s| s.success()).then_some(())
        });
        cluster
    }

    /// Create database `db` for a controller catalog; its `--catalog` URL.
    pub fn create_catalog(&self, db: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {db}"));
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Serve TLS on TCP with this certificate chain and key (PEM), from now on.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        let (cert, key) = (
            self.dir.path().join("server.crt"),
            self.dir.path().join("server.key"),
        );
        std::fs::write(&cert, cert_pem).expect("write server.crt");
        std::fs::write(&key, key_pem).expect("write server.key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        if id(&["-u"]) == 0 {
            let (uid, gid) = (id(&["-u", "postgres"]), id(&["-g", "postgres"]));
            for f in [&cert, &key] {
                std::os::unix::fs::chown(f, Some(uid), Some(gid)).expect("chown tls file");
            }
        }
        self.psql(
            "postgres",
            &format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
        );
        self.psql(
            "postgres",
            &format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
        );
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        self.psql("postgres", "SELECT pg_reload_conf()");
        wait_for("TLS on", 10, || {
            (self.psql("postgres", "SHOW ssl") == "on").then_some(())
        });
    }

    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run SQL through psql over the socket (trusted) as postgres; panics on error.
    /// A session holding an ACCESS EXCLUSIVE lock on `table` until the child is killed:
    /// pg_dump then waits on it and produces nothing.
    pub fn hold_exclusive_lock(&self, db: &str, table: &str) -> Child {
        let mut locker = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-X", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start psql");
        use std::io::Write;
        let sql = format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\n");
        locker
            .stdin
            .as_mut()
            .expect("psql stdin")
            .write_all(sql.as_bytes())
            .expect("send LOCK");
        wait_for("the lock", 30, || {
            let n = self.psql(
                db,
                &format!("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = '{table}'::regclass"),
            );
            (n == "1").then_some(())
        });
        locker
    }

    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql on {db} failed: {}\nSQL: {}",
            String::from_utf8_lossy(&out.stderr),
            &sql[..sql.len().min(300)]
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A plain-text pg_dump of `db` (schema and data), for comparisons.
    pub fn dump_plain(&self, db: &str, extra: &[&str]) -> String {
        let out = Command::new(self.bin.join("pg_dump"))
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(extra)
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump {db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn as_user(cmd: &mut Command, ids: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
