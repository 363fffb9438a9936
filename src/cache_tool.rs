//! `hoard cache stats|ls|purge|verify`: offline maintenance of a cache directory while hoard
//! is stopped. It opens the same index and storage as the server (the directory's lock refuses
//! a second opener, so it cannot run beside a live hoard) and never evicts: it loads the index
//! with unbounded capacity. A damaged index is moved aside and replaced here just as at
//! server start-up; `verify` reports that as a failure.

use std::io::Write;

use http::Uri;

use crate::cache::{Cache, CacheError, CacheSettings, policy};
use crate::config::CacheCommand;

#[derive(Debug, thiserror::Error)]
pub enum CacheToolError {
    /// The message says when another hoard holds the directory: only then is that the cause.
    #[error(transparent)]
    Open(#[from] CacheError),
    #[error("{0:?} is not an absolute URL")]
    Url(String),
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs one maintenance command; `Ok(false)` when `verify` found bad bodies.
pub fn run(
    settings: &CacheSettings,
    command: &CacheCommand,
    out: &mut dyn Write,
) -> Result<bool, CacheToolError> {
    let settings = CacheSettings {
        disk_size: u64::MAX >> 2,
        ..settings.clone()
    };
    let (cache, report) = Cache::open(settings.clone())?;
    // Counts and listings are of the whole index, not of what was loaded so far.
    cache.wait_until_loaded();
    let result = run_on(&cache, command, out);
    cache.close();
    let healthy = match report.rebuilt {
        Some(rebuilt) if matches!(command, CacheCommand::Verify) => {
            writeln!(
                out,
                "index: {}; moved to {} and replaced by an empty one",
                rebuilt.damage,
                rebuilt.moved_to(&settings.dir).display()
            )?;
            false
        }
        _ => true,
    };
    Ok(result? && healthy)
}

fn run_on(
    cache: &Cache,
    command: &CacheCommand,
    out: &mut dyn Write,
) -> Result<bool, CacheToolError> {
    match command {
        CacheCommand::Stats => {
            let disk = cache.disk_usage();
            writeln!(out, "urls        {}", cache.urls())?;
            writeln!(out, "responses   {}", cache.entries("").len())?;
            writeln!(out, "disk bytes  {}", disk.bytes)?;
            writeln!(out, "disk bodies {}", disk.objects)?;
        }
        CacheCommand::Ls { prefix } => {
            let now = policy::now_secs();
            for entry in cache.entries(prefix.as_deref().unwrap_or("")) {
                let age = entry.freshness.age(now);
                let state = if age < entry.freshness.lifetime {
                    "fresh"
                } else {
                    "stale"
                };
                let vary: Vec<String> = entry
                    .vary
                    .iter()
                    .map(|(name, value)| format!("{name}={}", value.as_deref().unwrap_or("-")))
                    .collect();
                writeln!(
                    out,
                    "{} {:>10} {:>8}s {state} {}{}",
                    entry.status.as_u16(),
                    entry.body_len,
                    age,
                    entry.key.url(),
                    if vary.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", vary.join(" "))
                    }
                )?;
            }
        }
        CacheCommand::Purge {
            group: Some(group),
            origin,
            ..
        } => {
            let origin = match origin {
                Some(origin) => Some(
                    crate::cache::groups::normalised_origin(origin)
                        .ok_or_else(|| CacheToolError::Url(origin.clone()))?,
                ),
                None => None,
            };
            writeln!(
                out,
                "purged {}",
                cache.purge_group(origin.as_deref(), group)
            )?;
        }
        CacheCommand::Purge { url, .. } => {
            let url = url.as_deref().unwrap_or_default();
            let uri: Uri = url
                .parse()
                .map_err(|_| CacheToolError::Url(url.to_owned()))?;
            if uri.scheme().is_none() {
                return Err(CacheToolError::Url(url.to_owned()));
            }
            writeln!(out, "purged {}", cache.purge(&uri))?;
        }
        CacheCommand::Verify => {
            let entries = cache.entries("");
            let mut bad = 0;
            for entry in &entries {
                if let Err(why) = cache.verify(entry) {
                    bad += 1;
                    writeln!(out, "bad: {} ({why}); removed", entry.key.url())?;
                }
            }
            writeln!(out, "checked {}, bad {bad}", entries.len())?;
            return Ok(bad == 0);
        }
    }
    Ok(true)
}
