//! The lookup (RFC 9111 §4): what the cache does with a GET or HEAD. Each round looks the key
//! up once and decides (`Lookup`); a stored response is served, a miss or a stale one goes to
//! the origin, and concurrent misses wait for one leader's fill (`collapse`) before looking
//! again.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Uri};

use super::admit::Admission;
use super::collapse::{self, FillLock, FillResult, Role};
use super::control::CacheControl;
use super::policy::{Verdict, now_secs};
use super::respond::{from_origin, not_cached};
use super::revalidate::without_conditionals;
use super::rules::{self, CacheRule};
use super::{Cache, CacheKey, CacheOutcome, CacheStatus, Origin, Served, StoredResponse, key};
use crate::body::{self, ProxyBody};

/// How often a request looks again after a stored body vanished or a fill it waited for
/// ended, before it goes to the origin on its own.
const ROUNDS: u32 = 4;

/// The request head, kept when the request itself has gone to the origin.
#[derive(Clone)]
pub(super) struct RequestHead {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) headers: HeaderMap,
    /// Where the origin's interim (1xx) responses go: to the client that asked.
    pub(super) interim: Option<crate::http1::Interim>,
    /// The cache rule that matched the request, if any.
    pub(super) rule: Option<Arc<CacheRule>>,
}

impl RequestHead {
    pub(super) fn of<B>(request: &Request<B>) -> RequestHead {
        RequestHead {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
            interim: request.extensions().get().cloned(),
            rule: request
                .extensions()
                .get::<rules::Applied>()
                .map(|applied| Arc::clone(&applied.0)),
        }
    }

    /// A body-less request with this head (GET and HEAD carry no body).
    pub(super) fn to_request(&self) -> Request<ProxyBody> {
        let mut request = Request::new(body::empty());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        if let Some(interim) = &self.interim {
            request.extensions_mut().insert(interim.clone());
        }
        request
    }
}

/// What one look at the index found for a request.
enum Lookup {
    /// A fresh stored response.
    Hit(Arc<StoredResponse>),
    /// A stale one this request may have anyway: `max-stale`, or `stale-while-revalidate`
    /// (`refresh`: a refresh is to start in the background).
    Stale {
        entry: Arc<StoredResponse>,
        refresh: bool,
    },
    /// One the origin must confirm first: stale, or fresh but the request's directives
    /// (`no-cache`, `max-age=0`, ...) ask for validation (`forced_by_client`).
    Validate {
        entry: Arc<StoredResponse>,
        forced_by_client: bool,
    },
    /// Nothing usable stored (`UriMiss` or `VaryMiss`).
    Miss(CacheOutcome),
    /// `only-if-cached`, and what is stored would need the origin: 504.
    NotCached,
}

/// Where the request goes once the lookup is settled.
enum Next {
    Revalidate {
        entry: Arc<StoredResponse>,
        forced_by_client: bool,
    },
    Fetch(CacheOutcome),
}

impl Cache {
    /// A GET or HEAD without a body: serve, revalidate or fetch.
    pub(super) async fn look_up_and_serve<O: Origin>(
        self: &Arc<Self>,
        key: CacheKey,
        request: Request<ProxyBody>,
        origin: &Arc<O>,
    ) -> Result<Served, O::Error> {
        let mut request_cc = CacheControl::parse_request(request.headers());
        if let Some(rules::Applied(rule)) = request.extensions().get()
            && rule.overrides.reload
        {
            // The rule's freshness stands, whatever the client's reload asks for.
            request_cc.no_cache = false;
            request_cc.max_age = None;
        }
        // Requests that cannot lead (HEAD, only-if-cached) still wait for a fill in flight.
        let may_lead = request.method() == Method::GET && !request_cc.only_if_cached;
        let mut lock = None;
        let mut round = 0;
        let next = loop {
            round += 1;
            let (entry, status) = match self.look_up(&key, request.headers(), &request_cc) {
                Lookup::Hit(entry) => {
                    let status = CacheStatus::new(CacheOutcome::Hit);
                    (
                        entry,
                        if round > 1 {
                            status.detail("collapsed")
                        } else {
                            status
                        },
                    )
                }
                Lookup::Stale { entry, refresh } => {
                    let why = if refresh {
                        self.refresh_in_background(&key, &entry, RequestHead::of(&request), origin);
                        "stale-while-revalidate"
                    } else {
                        "max-stale"
                    };
                    (entry, CacheStatus::new(CacheOutcome::Stale).detail(why))
                }
                Lookup::NotCached => return Ok(not_cached()),
                Lookup::Validate {
                    entry,
                    forced_by_client,
                } if !may_lead => {
                    break Next::Revalidate {
                        entry,
                        forced_by_client,
                    };
                }
                Lookup::Validate {
                    entry,
                    forced_by_client,
                } => match self.lead_or_wait(&key, true, round).await {
                    Wait::Go(leader) => {
                        lock = leader;
                        break Next::Revalidate {
                            entry,
                            forced_by_client,
                        };
                    }
                    Wait::LookAgain => continue,
                },
                Lookup::Miss(outcome) => match self.lead_or_wait(&key, may_lead, round).await {
                    Wait::Go(leader) => {
                        lock = leader;
                        break Next::Fetch(outcome);
                    }
                    Wait::LookAgain => continue,
                },
            };
            if let Some(response) = self
                .answer(&entry, request.method(), request.headers(), status)
                .await
            {
                return Ok(response);
            }
            // The body vanished (replaced or evicted meanwhile) or failed its check; that
            // entry is gone, so look again.
            if round >= ROUNDS {
                break Next::Fetch(CacheOutcome::UriMiss);
            }
        };
        // Boxed so that the future of a hit (the fast path) is not as large as the origin
        // exchange's, which would be copied with it on every request.
        match next {
            Next::Revalidate {
                entry,
                forced_by_client,
            } => {
                let admission = self.admission(key, RequestHead::of(&request), request_cc, lock);
                Box::pin(self.revalidate(entry, request, admission, forced_by_client, origin)).await
            }
            Next::Fetch(_) if request_cc.only_if_cached => Ok(not_cached()),
            Next::Fetch(outcome) => {
                let admission = self.admission(key, RequestHead::of(&request), request_cc, lock);
                Box::pin(self.fetch(request, admission, CacheStatus::new(outcome), origin)).await
            }
        }
    }

    /// One look at the index: the variant that matches the request, and what its freshness
    /// allows.
    fn look_up(&self, key: &CacheKey, headers: &HeaderMap, request_cc: &CacheControl) -> Lookup {
        let Some(variants) = self.index.get(key) else {
            return Lookup::Miss(CacheOutcome::UriMiss);
        };
        let Some(entry) = select_variant(&variants, headers) else {
            return Lookup::Miss(CacheOutcome::VaryMiss);
        };
        let now = now_secs();
        match entry.freshness.verdict(request_cc, now) {
            Verdict::Fresh => Lookup::Hit(entry),
            Verdict::StaleAllowed => Lookup::Stale {
                entry,
                refresh: false,
            },
            Verdict::StaleWhileRevalidate => Lookup::Stale {
                entry,
                refresh: true,
            },
            Verdict::Validate if request_cc.only_if_cached => Lookup::NotCached,
            Verdict::Validate => Lookup::Validate {
                forced_by_client: entry.freshness.verdict(&CacheControl::default(), now)
                    == Verdict::Fresh,
                entry,
            },
        }
    }

    /// One request per key goes to the origin at a time (it leads, holding the fill lock);
    /// the others wait for its result and look again (RFC 9111 §4 allows reusing the
    /// leader's response). After the last round, or when no fill is in flight for a request
    /// that may not lead, or the leader stored nothing, the request goes on alone.
    async fn lead_or_wait(&self, key: &CacheKey, may_lead: bool, round: u32) -> Wait {
        if round >= ROUNDS {
            return Wait::Go(None);
        }
        let waiting = if may_lead {
            match self.collapser.join(key.hash()) {
                Role::Leader(leader) => return Wait::Go(Some(leader)),
                Role::Follower(waiting) => Some(waiting),
            }
        } else {
            self.collapser.in_flight(key.hash())
        };
        let Some(waiting) = waiting else {
            return Wait::Go(None);
        };
        match collapse::wait(waiting, self.settings.collapse_wait).await {
            FillResult::NotStored => Wait::Go(None),
            _ => Wait::LookAgain,
        }
    }

    /// A miss: fetch from the origin and store what may be stored.
    pub(super) async fn fetch<O: Origin>(
        self: &Arc<Self>,
        request: Request<ProxyBody>,
        mut admission: Admission,
        status: CacheStatus,
        origin: &Arc<O>,
    ) -> Result<Served, O::Error> {
        if request.headers().contains_key(header::RANGE) && !admission.key.is_part() {
            // A range of an object not stored whole: stored as the piece the origin sends.
            return self.fetch_piece(request, admission, origin).await;
        }
        if request.method() != Method::GET {
            // A HEAD that misses passes through; the next GET fills.
            let response = origin.fetch(request).await?;
            return Ok(from_origin(
                response,
                &CacheStatus::new(CacheOutcome::Bypass),
            ));
        }
        let request = without_conditionals(request);
        if let Some(served) = self
            .from_shared_tier(request.method(), request.headers(), &mut admission, &status)
            .await
        {
            return Ok(served);
        }
        admission.request_time = now_secs();
        let response = origin.fetch(request).await?;
        Ok(self.admit_and_answer(admission, response, status))
    }
}

/// What a request that found no usable entry does next.
enum Wait {
    /// Go to the origin, holding the fill lock when this request leads.
    Go(Option<FillLock>),
    /// A fill finished meanwhile: look again.
    LookAgain,
}

/// The most recently stored variant whose `Vary` values match the request (RFC 9111 §4.1).
pub(super) fn select_variant(
    variants: &[Arc<StoredResponse>],
    request: &HeaderMap,
) -> Option<Arc<StoredResponse>> {
    variants
        .iter()
        .rev()
        .find(|entry| {
            entry.vary.is_empty() || {
                let names: Vec<HeaderName> = entry
                    .vary
                    .iter()
                    .filter_map(|(name, _)| HeaderName::from_bytes(name.as_bytes()).ok())
                    .collect();
                key::vary_values(request, &names) == entry.vary
            }
        })
        .cloned()
}
