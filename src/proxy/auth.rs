//! Basic authentication against an htpasswd file of bcrypt entries (as `htpasswd -B` writes
//! them, the format Squid's and nginx's basic auth read): `Proxy-Authorization` for proxy
//! requests (407), `Authorization` for the gateway (401); `Proxy::authenticate` asks for it.
//!
//! bcrypt is slow on purpose, so a verified user/password pair is remembered (as a BLAKE3
//! digest, never in clear) and later requests skip bcrypt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use base64::Engine;

use http::{HeaderValue, Request, header};
use quick_cache::sync::Cache;

use super::{Proxy, ProxyError, Rules};
use crate::exchange::RequestMode;

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("--auth-file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("--auth-file {path} line {line}: {reason}")]
    Entry {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("--auth-file {0}: no users")]
    Empty(PathBuf),
}

pub struct Users {
    hashes: HashMap<String, String>,
    /// Digests of user:password pairs that bcrypt accepted.
    verified: Cache<[u8; 32], ()>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, AuthFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| AuthFileError::Read(path.to_owned(), e))?;
        let entry_error = |line, reason| AuthFileError::Entry {
            path: path.to_owned(),
            line,
            reason,
        };
        let mut hashes = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or(entry_error(number + 1, "expected user:hash"))?;
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(entry_error(
                    number + 1,
                    "only bcrypt entries ($2y$, as htpasswd -B writes) are accepted",
                ));
            }
            hashes.insert(user.to_owned(), hash.to_owned());
        }
        if hashes.is_empty() {
            return Err(AuthFileError::Empty(path.to_owned()));
        }
        Ok(Users {
            hashes,
            verified: Cache::new(10_000),
        })
    }

    /// The answer for this `Basic` credential when it needs no bcrypt run: `Some(true)` for a
    /// pair verified before, `Some(false)` for a missing or malformed credential or an unknown
    /// user, `None` when only bcrypt can tell (`check`).
    pub fn remembered(&self, credential: Option<&HeaderValue>) -> Option<bool> {
        let Some((user, password)) = credential.and_then(basic_credentials) else {
            return Some(false);
        };
        let Some(hash) = self.hashes.get(&user) else {
            return Some(false);
        };
        self.verified
            .get(&digest(&user, &password, hash))
            .map(|()| true)
    }

    /// Does this `Basic` credential name a user with the right password? Runs bcrypt (a few
    /// milliseconds, on purpose) unless the pair was verified before: call it off the reactor.
    pub fn check(&self, credential: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = credential.and_then(basic_credentials) else {
            return false;
        };
        let Some(hash) = self.hashes.get(&user) else {
            return false;
        };
        let digest = digest(&user, &password, hash);
        if self.verified.get(&digest).is_some() {
            return true;
        }
        let ok = bcrypt::verify(&password, hash).unwrap_or(false);
        if ok {
            self.verified.insert(digest, ());
        }
        ok
    }
}

/// What the memo keeps instead of the password.
fn digest(user: &str, password: &str, hash: &str) -> [u8; 32] {
    *blake3::hash(format!("{user}\0{password}\0{hash}").as_bytes()).as_bytes()
}

/// `Basic dXNlcjpwYXNz` → ("user", "pass").
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl Proxy {
    /// With `--auth-file`, proxy requests need `Proxy-Authorization` (407) and gateway
    /// requests `Authorization` (401, which a browser asks the person for); the credential is
    /// hoard's and is not forwarded. Reverse-proxy and admin requests are not asked.
    pub(super) async fn authenticate<B>(
        &self,
        rules: &Rules,
        request: &mut Request<B>,
        mode: RequestMode,
    ) -> Result<(), ProxyError> {
        let Some(users) = &rules.users else {
            return Ok(());
        };
        let (header, missing) = match mode {
            RequestMode::Forward | RequestMode::Connect => {
                (header::PROXY_AUTHORIZATION, ProxyError::ProxyAuthRequired)
            }
            RequestMode::Gateway => (header::AUTHORIZATION, ProxyError::AuthRequired),
            RequestMode::Reverse | RequestMode::Admin | RequestMode::Peer => return Ok(()),
        };
        let credential = request.headers_mut().remove(&header);
        let allowed = match users.remembered(credential.as_ref()) {
            Some(known) => known,
            None => {
                let users = Arc::clone(users);
                tokio::task::spawn_blocking(move || users.check(credential.as_ref()))
                    .await
                    .unwrap_or(false)
            }
        };
        if allowed {
            Ok(())
        } else {
            self.metrics.denied();
            Err(missing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> (Users, tempfile::NamedTempFile) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let hash = bcrypt::hash("secret", 4).unwrap();
        std::fs::write(file.path(), format!("# users\nalice:{hash}\n")).unwrap();
        (Users::load(file.path()).unwrap(), file)
    }

    fn basic(user_pass: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_pass);
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    #[test]
    fn checks_bcrypt_passwords_and_remembers_good_ones() {
        let (users, _file) = users();
        assert_eq!(
            users.remembered(Some(&basic("alice:secret"))),
            None,
            "needs bcrypt"
        );
        assert!(users.check(Some(&basic("alice:secret"))));
        assert_eq!(
            users.remembered(Some(&basic("alice:secret"))),
            Some(true),
            "then remembered"
        );
        assert_eq!(users.remembered(Some(&basic("bob:x"))), Some(false));
        assert!(!users.check(Some(&basic("alice:wrong"))));
        assert!(!users.check(Some(&basic("bob:secret"))));
        assert!(!users.check(None));
        assert!(!users.check(Some(&HeaderValue::from_static("Bearer x"))));
    }

    #[test]
    fn rejects_non_bcrypt_entries_with_the_line() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "bob:{SHA}abc\n").unwrap();
        let err = Users::load(file.path()).err().unwrap().to_string();
        assert!(err.contains("line 1") && err.contains("bcrypt"), "{err}");
    }
}
