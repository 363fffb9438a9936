//! The shared tier's store (`--shared-tier s3://BUCKET/PREFIX`): any S3-compatible object
//! store (AWS S3, Cloudflare R2, MinIO, Ceph RGW, Garage), reached through the Apache Arrow
//! project's `object_store` crate, implementing `cache::shared::SharedTier`.
//!
//! A slow or failing store must never hold a request up for long: every call has a timeout
//! (`--shared-tier-timeout`), and after `TRIPS_AFTER` failures in a row a circuit breaker
//! skips the store for a while before letting one call try again. Everything is counted in
//! the metrics (`hoard_shared_tier_*`).
//!
//! This module owns talking to the store. It must not decide what is stored or served:
//! that is `cache::shared`.

mod breaker;
mod credentials;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::cache::shared::{BoxFuture, SharedTier};
use crate::metrics::Metrics;
use breaker::Breaker;

/// The `--shared-tier*` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedTierSettings {
    pub bucket: String,
    /// Object names start with this (no leading or trailing slash); may be empty.
    pub prefix: String,
    /// `--shared-tier-endpoint`: an S3-compatible store's URL; `None`: AWS.
    pub endpoint: Option<String>,
    pub timeout: Duration,
    /// Responses with less freshness left are not written.
    pub min_ttl: Duration,
}

impl SharedTierSettings {
    /// Parses `s3://BUCKET/PREFIX`.
    pub fn parse_url(url: &str) -> Result<(String, String), String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?}: write s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?}: no bucket"));
        }
        Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("--shared-tier: {0}")]
pub struct SharedTierError(String);

/// The store and what guards it.
pub struct ObjectStoreTier {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    timeout: Duration,
    /// Reads and writes trip apart: slow writes of large objects must not stop reads.
    read_breaker: Breaker,
    write_breaker: Breaker,
    metrics: Arc<Metrics>,
}

impl ObjectStoreTier {
    /// An S3 client for `settings`, with credentials from the standard AWS environment
    /// variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION`, ...) or, failing those, the shared credentials file (`~/.aws/credentials`
    /// or `AWS_SHARED_CREDENTIALS_FILE`, profile `AWS_PROFILE` or `default`). Makes no
    /// request yet.
    pub fn open(
        settings: &SharedTierSettings,
        metrics: Arc<Metrics>,
    ) -> Result<ObjectStoreTier, SharedTierError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            // `If-None-Match: *` on create, which AWS, R2, MinIO and Ceph honour.
            .with_conditional_put(S3ConditionalPut::ETagMatch);
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && let Some(file) = credentials::from_shared_file()
        {
            builder = builder
                .with_access_key_id(file.access_key_id)
                .with_secret_access_key(file.secret_access_key);
            if let Some(token) = file.session_token {
                builder = builder.with_token(token);
            }
        }
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder
            .build()
            .map_err(|e| SharedTierError(e.to_string()))?;
        Ok(ObjectStoreTier {
            store: Arc::new(store),
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
            read_breaker: Breaker::default(),
            write_breaker: Breaker::default(),
            metrics,
        })
    }

    fn path(&self, name: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Counts an operation's end and feeds the breaker.
    fn finished(
        &self,
        operation: &'static str,
        result: &'static str,
        failed: bool,
        started: Instant,
    ) {
        let (breaker, side) = if operation == "get" {
            (&self.read_breaker, "read")
        } else {
            (&self.write_breaker, "write")
        };
        if failed {
            breaker.failed();
        } else {
            breaker.succeeded();
        }
        self.metrics
            .fleet
            .set_shared_circuit_open(side, breaker.is_open());
        self.metrics
            .fleet
            .shared_tier(operation, result, started.elapsed());
    }

    async fn read(&self, name: &str) -> Option<Bytes> {
        if !self.read_breaker.allows() {
            self.metrics
                .fleet
                .shared_tier_skipped("get", "circuit-open");
            return None;
        }
        let started = Instant::now();
        let path = self.path(name);
        let got = tokio::time::timeout(self.timeout, async {
            self.store.get(&path).await?.bytes().await
        })
        .await;
        match got {
            Ok(Ok(bytes)) => {
                self.finished("get", "hit", false, started);
                Some(bytes)
            }
            Ok(Err(object_store::Error::NotFound { .. })) => {
                self.finished("get", "miss", false, started);
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shared tier: read failed");
                self.finished("get", "error", true, started);
                None
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "shared tier: read timed out");
                self.finished("get", "timeout", true, started);
                None
            }
        }
    }

    async fn write(&self, name: &str, object: Bytes) {
        let started = Instant::now();
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let path = self.path(name);
        let put = self
            .store
            .put_opts(&path, PutPayload::from_bytes(object), options);
        let result = match tokio::time::timeout(self.timeout, put).await {
            Ok(Ok(_)) => ("stored", false),
            Ok(Err(object_store::Error::AlreadyExists { .. })) => ("exists", false),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "shared tier: write failed");
                ("error", true)
            }
            Err(_) => ("timeout", true),
        };
        self.finished("put", result.0, result.1, started);
    }
}

impl SharedTier for ObjectStoreTier {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<Bytes>> {
        Box::pin(self.read(name))
    }

    fn create<'a>(&'a self, name: &'a str, object: Bytes) -> BoxFuture<'a, ()> {
        Box::pin(self.write(name, object))
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let started = Instant::now();
            let path = self.path(name);
            let result = match tokio::time::timeout(self.timeout, self.store.delete(&path)).await {
                Ok(Ok(())) => ("removed", false),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "shared tier: cannot remove a bad object");
                    ("error", true)
                }
                Err(_) => ("timeout", true),
            };
            self.finished("remove", result.0, result.1, started);
        })
    }

    fn takes_writes(&self) -> bool {
        let open = !self.write_breaker.allows();
        if open {
            self.metrics
                .fleet
                .shared_tier_skipped("put", "circuit-open");
        }
        !open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        assert_eq!(
            SharedTierSettings::parse_url("s3://cache/fleet-a/"),
            Ok(("cache".into(), "fleet-a".into()))
        );
        assert_eq!(
            SharedTierSettings::parse_url("s3://cache"),
            Ok(("cache".into(), String::new()))
        );
        assert!(SharedTierSettings::parse_url("gs://cache").is_err());
        assert!(SharedTierSettings::parse_url("s3:///x").is_err());
    }
}
