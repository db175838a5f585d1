//! The delta ADS gRPC service.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::ProxySnapshot;
use crate::delta::{DeltaState, Feedback, Versioned};

/// What happened on a stream, for callers that watch Envoy's progress (metrics, tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XdsEvent {
    Requested {
        type_url: String,
        subscribe: Vec<String>,
        unsubscribe: Vec<String>,
        /// How many resources Envoy said it already has (a reconnect).
        initial_versions: usize,
    },
    Sent {
        type_url: String,
        nonce: String,
        resources: Vec<String>,
        removed: Vec<String>,
    },
    Acked {
        type_url: String,
        nonce: String,
    },
    Nacked {
        type_url: String,
        nonce: String,
        resources: Vec<String>,
        /// Envoy's reason (`error_detail.message`).
        message: String,
    },
}

/// Where the server gets each proxy's configuration.
pub trait SnapshotSource: Send + Sync + 'static {
    /// Called when an Envoy connects: node.id is the proxy ID; token is the `x-consul-token`
    /// gRPC metadata. Err → the stream is refused with that Status (e.g.
    /// PermissionDenied/NotFound).
    fn subscribe(
        &self,
        proxy_id: &str,
        token: Option<&str>,
    ) -> Result<watch::Receiver<Option<Arc<ProxySnapshot>>>, Status>;

    /// Told about every request and response of every stream; NACKs are also logged.
    fn on_event(&self, _proxy_id: &str, _event: &XdsEvent) {}
}

/// The ADS service; build it with [`service`].
#[derive(Debug)]
pub struct AdsServer<S> {
    source: Arc<S>,
}

/// The service to add to a tonic `Router`.
pub fn service<S: SnapshotSource>(
    source: Arc<S>,
) -> AggregatedDiscoveryServiceServer<AdsServer<S>> {
    AggregatedDiscoveryServiceServer::new(AdsServer { source })
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Distinguishes streams in nonces and logs across the process's lifetime.
static STREAMS: AtomicU64 = AtomicU64::new(0);

#[tonic::async_trait]
impl<S: SnapshotSource> AggregatedDiscoveryService for AdsServer<S> {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "Berth serves delta xDS only: set ads_config.api_type to DELTA_GRPC",
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let token = request
            .metadata()
            .get("x-consul-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::cancelled("stream closed before its first request"))?;
        let proxy_id = first
            .node
            .as_ref()
            .map(|n| n.id.clone())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Status::invalid_argument("the first request must carry node.id"))?;
        let snapshots = self.source.subscribe(&proxy_id, token.as_deref())?;
        let stream_id = STREAMS.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(proxy_id, stream_id, "Envoy connected");
        let (tx, rx) = mpsc::channel(16);
        let stream = StreamTask {
            source: self.source.clone(),
            proxy_id,
            state: DeltaState::new(stream_id.to_string()),
            current: None,
            tx,
        };
        tokio::spawn(stream.run(first, inbound, snapshots));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct StreamTask<S> {
    source: Arc<S>,
    proxy_id: String,
    state: DeltaState,
    current: Option<Versioned>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
}

impl<S: SnapshotSource> StreamTask<S> {
    async fn run(
        mut self,
        first: DeltaDiscoveryRequest,
        mut inbound: Streaming<DeltaDiscoveryRequest>,
        mut snapshots: watch::Receiver<Option<Arc<ProxySnapshot>>>,
    ) {
        self.load(&mut snapshots);
        self.on_request(&first);
        if self.push().await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => {
                        self.on_request(&req);
                        if self.push().await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        tracing::debug!(proxy_id = self.proxy_id, "Envoy closed the stream");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(proxy_id = self.proxy_id, error = %e, "stream error");
                        return;
                    }
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        // The source let go of the proxy (deregistered, or the agent stops).
                        let _ = self
                            .tx
                            .send(Err(Status::unavailable("the proxy is no longer registered")))
                            .await;
                        return;
                    }
                    self.load(&mut snapshots);
                    if self.push().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn load(&mut self, snapshots: &mut watch::Receiver<Option<Arc<ProxySnapshot>>>) {
        let snap = snapshots.borrow_and_update().clone();
        self.current = snap.map(|s| Versioned::new(&crate::build(&s)));
    }

    fn on_request(&mut self, req: &DeltaDiscoveryRequest) {
        self.source.on_event(
            &self.proxy_id,
            &XdsEvent::Requested {
                type_url: req.type_url.clone(),
                subscribe: req.resource_names_subscribe.clone(),
                unsubscribe: req.resource_names_unsubscribe.clone(),
                initial_versions: req.initial_resource_versions.len(),
            },
        );
        let event = match self.state.on_request(req) {
            Feedback::None => return,
            Feedback::Ack { type_url, nonce } => XdsEvent::Acked { type_url, nonce },
            Feedback::Nack {
                type_url,
                nonce,
                resources,
                message,
            } => {
                tracing::warn!(
                    proxy_id = self.proxy_id,
                    type_url,
                    ?resources,
                    error = message,
                    "Envoy rejected configuration"
                );
                XdsEvent::Nacked {
                    type_url,
                    nonce,
                    resources,
                    message,
                }
            }
        };
        self.source.on_event(&self.proxy_id, &event);
    }

    /// Sends what Envoy lacks; Err when the stream is gone.
    async fn push(&mut self) -> Result<(), ()> {
        let Some(current) = &self.current else {
            return Ok(());
        };
        for resp in self.state.responses(current) {
            self.source.on_event(
                &self.proxy_id,
                &XdsEvent::Sent {
                    type_url: resp.type_url.clone(),
                    nonce: resp.nonce.clone(),
                    resources: resp.resources.iter().map(|r| r.name.clone()).collect(),
                    removed: resp.removed_resources.clone(),
                },
            );
            self.tx.send(Ok(resp)).await.map_err(|_| ())?;
        }
        Ok(())
    }
}
