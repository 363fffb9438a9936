//! A real S3-compatible server for the shared tier: `moto_server` (PyPI `moto[server]`,
//! which `.ci/run` installs) on a loopback port, with one bucket; stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Moto {
    child: Child,
    pub endpoint: String,
}

pub(crate) const BUCKET: &str = "hoard-fleet";

impl Moto {
    pub(crate) async fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (pip install 'moto[server]') must be installed");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // moto accepts unsigned requests: the bucket is made with a plain PUT.
        loop {
            match reqwest::Client::new()
                .put(format!("{}/{BUCKET}", moto.endpoint))
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => break,
                _ => {
                    assert!(Instant::now() < deadline, "moto_server did not start");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        moto
    }

    /// The environment a hoard needs to use it.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The object names stored under `prefix`.
    pub(crate) async fn objects(&self, prefix: &str) -> Vec<String> {
        let listing = reqwest::get(format!(
            "{}/{BUCKET}?list-type=2&prefix={prefix}",
            self.endpoint
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        listing
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }

    /// A signed client for the bucket, as any S3 tool would use.
    fn store(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap()
    }

    pub(crate) async fn read(&self, name: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(name);
        let got = self.store().get(&path).await.unwrap();
        got.bytes().await.unwrap().to_vec()
    }

    /// Overwrites object `name` with `bytes`, as damage or another writer would.
    pub(crate) async fn put(&self, name: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(name);
        self.store().put(&path, bytes.into()).await.unwrap();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
