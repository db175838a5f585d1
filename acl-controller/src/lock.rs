//! One active controller per cluster: a KV lock held by a session.
//!
//! The holder re-acquires the key every third of the session TTL, which both renews its
//! claim and bumps the key's ModifyIndex. A standby that sees the index stand still for a
//! whole TTL ends the holder's session and takes the lock. Waiting for the servers to expire
//! the session instead would take up to twice the TTL (Consul's grace, which the servers
//! keep), and the issue asks for a takeover within one TTL.
//!
//! A holder that cannot beat for two thirds of the TTL stops acting before a standby can
//! take over, so two controllers never remove things at once for long; and what they
//! remove is idempotent anyway.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::api::{Api, ApiError};

pub struct Lock {
    api: std::sync::Arc<Api>,
    key: String,
    ttl: Duration,
    holder: String,
    session: Option<String>,
    last_renew: Instant,
}

/// What the standby remembers of the current holder.
struct Seen {
    session: String,
    modify_index: u64,
    since: Instant,
}

impl Lock {
    pub fn new(api: std::sync::Arc<Api>, key: String, ttl: Duration, holder: String) -> Lock {
        Lock {
            api,
            key,
            ttl,
            holder,
            session: None,
            last_renew: Instant::now(),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    fn beat_every(&self) -> Duration {
        self.ttl / 3
    }

    async fn session(&mut self) -> Result<String, ApiError> {
        if let Some(s) = &self.session
            && self.last_renew.elapsed() >= self.beat_every()
        {
            let renewed = self
                .api
                .put_opt(&format!("/v1/session/renew/{s}"), &json!({}))
                .await?;
            if renewed.is_none() {
                tracing::info!(session = %s, "the lock session expired; making another");
                self.session = None;
            } else {
                self.last_renew = Instant::now();
            }
        }
        if let Some(s) = &self.session {
            return Ok(s.clone());
        }
        let v = self
            .api
            .put(
                "/v1/session/create",
                &json!({
                    "Name": format!("berth-acl-controller {}", self.holder),
                    "TTL": format!("{}s", self.ttl.as_secs()),
                    "Behavior": "release",
                    // A lock that is let go (or taken over) may be taken at once.
                    "LockDelay": "0s",
                    // Not tied to the server node's health: only the TTL counts.
                    "NodeChecks": [],
                }),
            )
            .await?;
        let id = v["ID"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ApiError::Status {
                method: "PUT".into(),
                path: "/v1/session/create".into(),
                status: 200,
                message: format!("no session ID in {v}"),
            })?;
        self.last_renew = Instant::now();
        self.session = Some(id.clone());
        Ok(id)
    }

    /// The key's current holder and ModifyIndex.
    async fn read(&self) -> Result<Option<(Option<String>, u64)>, ApiError> {
        let v = self.api.get_opt(&format!("/v1/kv/{}", self.key)).await?;
        Ok(v.as_ref().and_then(|v| v.get(0)).map(|e| {
            (
                e["Session"].as_str().map(str::to_string),
                e["ModifyIndex"].as_u64().unwrap_or(0),
            )
        }))
    }

    async fn acquire(&mut self, session: &str, beat: u64) -> Result<bool, ApiError> {
        let body = json!({"holder": self.holder, "beat": beat});
        let v: Value = self
            .api
            .put(&format!("/v1/kv/{}?acquire={session}", self.key), &body)
            .await?;
        Ok(v == Value::Bool(true))
    }

    /// Runs until `stop` turns true, publishing on `leading` whether this controller holds
    /// the lock. Releases the lock (ends its session) on the way out.
    pub async fn run(mut self, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let poll = Duration::from_secs(1).min(self.ttl / 10);
        let mut seen: Option<Seen> = None;
        let mut beat = 0u64;
        let mut last_beat: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let held = *leading.borrow();
            let step = self.step(held, &mut seen, &mut beat).await;
            match step {
                Ok(now_held) => {
                    if now_held {
                        last_beat = Some(Instant::now());
                    }
                    if now_held != held {
                        if now_held {
                            tracing::info!(key = %self.key, "holding the controller lock: this controller is active");
                        } else {
                            tracing::warn!(key = %self.key, "lost the controller lock: standing by");
                        }
                        let _ = leading.send(now_held);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, key = %self.key, "controller lock");
                    // Fence: a standby may take over one TTL after the last beat.
                    if held && last_beat.is_none_or(|b| b.elapsed() >= self.ttl * 2 / 3) {
                        tracing::warn!(
                            "could not renew the controller lock for 2/3 of its TTL: standing by"
                        );
                        let _ = leading.send(false);
                        self.session = None;
                    }
                }
            }
            let wait = if *leading.borrow() {
                self.beat_every()
            } else {
                poll
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        if let Some(s) = self.session.take() {
            let _ = leading.send(false);
            match self
                .api
                .put_opt(&format!("/v1/session/destroy/{s}"), &json!({}))
                .await
            {
                Ok(_) => tracing::info!(key = %self.key, "released the controller lock"),
                Err(e) => tracing::warn!(error = %e, "could not release the controller lock"),
            }
        }
    }

    /// One round; whether this controller holds the lock afterwards.
    async fn step(
        &mut self,
        held: bool,
        seen: &mut Option<Seen>,
        beat: &mut u64,
    ) -> Result<bool, ApiError> {
        let session = self.session().await?;
        if held {
            *beat += 1;
            return self.acquire(&session, *beat).await;
        }
        match self.read().await? {
            Some((Some(holder), index)) if holder != session => {
                let now = Instant::now();
                match seen {
                    Some(s) if s.session == holder && s.modify_index == index => {
                        if s.since.elapsed() < self.ttl {
                            return Ok(false);
                        }
                        tracing::warn!(
                            session = %holder,
                            "the active controller has not renewed the lock for a session TTL: ending its session"
                        );
                        self.api
                            .put_opt(&format!("/v1/session/destroy/{holder}"), &json!({}))
                            .await?;
                        *seen = None;
                    }
                    _ => {
                        *seen = Some(Seen {
                            session: holder,
                            modify_index: index,
                            since: now,
                        });
                        return Ok(false);
                    }
                }
            }
            _ => {}
        }
        *beat += 1;
        self.acquire(&session, *beat).await
    }

    /// For `-once`: waits until the lock is ours (at most about two TTLs), or says who has it.
    pub async fn acquire_once(&mut self) -> Result<bool, ApiError> {
        let deadline = Instant::now() + self.ttl * 2;
        let mut seen = None;
        let mut beat = 0;
        while Instant::now() < deadline {
            if self.step(false, &mut seen, &mut beat).await? {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(false)
    }

    pub async fn release(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = self
                .api
                .put_opt(&format!("/v1/session/destroy/{s}"), &json!({}))
                .await;
        }
    }
}
