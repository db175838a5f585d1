//! The task metadata (v3/v4) and credentials endpoints one task sees at 169.254.170.2:80.
//! Each task has its own listener in its own namespace, so a task can only ever name its own
//! containers and its own credentials.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::task::Task;

pub fn router(task: Arc<Task>) -> axum::Router {
    axum::Router::new()
        .route("/v4/{cid}", get(container))
        .route("/v4/{cid}/task", get(task_doc))
        .route("/v3/{cid}", get(container))
        .route("/v3/{cid}/task", get(task_doc))
        .route("/v2/credentials/{id}", get(credentials))
        .with_state(task)
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "message": what }))).into_response()
}

async fn container(State(t): State<Arc<Task>>, Path(cid): Path<String>) -> Response {
    match t.container_index(&cid) {
        Some(i) => Json(t.container_metadata(i)).into_response(),
        None => not_found("no such container in this task"),
    }
}

async fn task_doc(State(t): State<Arc<Task>>, Path(cid): Path<String>) -> Response {
    match t.container_index(&cid) {
        Some(_) => Json(t.metadata()).into_response(),
        None => not_found("no such container in this task"),
    }
}

async fn credentials(State(t): State<Arc<Task>>, Path(id): Path<String>) -> Response {
    let (Some(mine), Some(role)) = (&t.creds_id, &t.role_arn) else {
        return not_found("this task has no task role");
    };
    if *mine != id {
        return not_found("no such credentials");
    }
    match t.creds.get(&t.ctx().sts, role, &t.id).await {
        Ok(c) => Json(c).into_response(),
        Err(e) => {
            tracing::error!(task = %t.id, error = %e, "task role credentials");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "code": "AssumeRoleError", "message": e.to_string() })),
            )
                .into_response()
        }
    }
}
