//! A real hyper origin server that records what it received and on which connection.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hoard::body::{self, ProxyBody};
use http::{HeaderMap, Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The head of one request as the origin saw it.
#[derive(Debug, Clone)]
pub(crate) struct SeenRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub connection: usize,
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>
        + Send
        + Sync,
>;

#[derive(Clone)]
pub(crate) struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    connections: Arc<AtomicUsize>,
}

impl Origin {
    /// An origin whose every response is built by `handler` (which may stream or consume the
    /// request body).
    pub(crate) async fn start<F, Fut>(handler: F) -> Origin
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        Origin::start_on("127.0.0.1", handler).await
    }

    /// Like `start`, listening on another loopback address (`127.0.0.2`, ...): a second
    /// host, for destination rules that must tell hosts apart.
    pub(crate) async fn start_on<F, Fut>(ip: &str, handler: F) -> Origin
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |request| Box::pin(handler(request)));
        let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
        let origin = Origin {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            connections: Arc::default(),
        };
        let state = origin.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let connection = state.connections.fetch_add(1, Ordering::SeqCst);
                let seen = state.seen.clone();
                let handler = handler.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    seen.lock().unwrap().push(SeenRequest {
                        method: request.method().clone(),
                        uri: request.uri().clone(),
                        headers: request.headers().clone(),
                        connection,
                    });
                    let response = handler(request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        origin
    }

    /// An origin that answers `/N` with 200, an ETag and the `N`-th header set of `cases`:
    /// one origin for a table of cases.
    pub(crate) async fn per_path(
        cases: &'static [&'static [(&'static str, &'static str)]],
    ) -> Origin {
        Origin::start(move |request: Request<Incoming>| async move {
            let index: usize = request.uri().path()[1..].parse().unwrap();
            let mut builder = Response::builder().header("etag", "\"e\"");
            for (name, value) in cases[index] {
                builder = builder.header(*name, *value);
            }
            builder.body(body::full("body")).unwrap()
        })
        .await
    }

    /// An origin that answers every request with 200 and `body`.
    pub(crate) async fn fixed(body: &'static str) -> Origin {
        Origin::start(move |_| async move {
            Response::new(body::full(Bytes::from_static(body.as_bytes())))
        })
        .await
    }

    /// An origin that answers 200 with `headers` and a body naming the path and how many
    /// requests it has served so far (`/a #3`), so a stale or replaced body is recognisable.
    pub(crate) async fn with_headers(headers: &'static [(&'static str, &'static str)]) -> Origin {
        let served = Arc::new(AtomicUsize::new(0));
        Origin::start(move |request: Request<Incoming>| {
            let n = served.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                let mut response = Response::builder();
                for (name, value) in headers {
                    response = response.header(*name, *value);
                }
                response
                    .body(body::full(format!("{} #{n}", request.uri().path())))
                    .unwrap()
            }
        })
        .await
    }

    /// An origin that answers with the request body it received.
    pub(crate) async fn echo() -> Origin {
        Origin::start(|request: Request<Incoming>| async move {
            Response::new(body::stream(request.into_body()))
        })
        .await
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn last(&self) -> SeenRequest {
        self.seen().pop().expect("the origin saw a request")
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
