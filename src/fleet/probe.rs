//! The fleet's background work: probing every other member each second (a member that
//! fails two probes in a row is down, one that answers is up again), and re-resolving the
//! member list every `REFRESH` so that `dns:` members follow their DNS name.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Method, StatusCode};

use super::{FLEET_PREFIX, Fleet, PeerSource};

const PROBE_EVERY: Duration = Duration::from_secs(1);
const REFRESH: Duration = Duration::from_secs(30);

/// Starts the loops; they end once the fleet is dropped.
pub(super) fn start(fleet: &Arc<Fleet>) {
    let weak = Arc::downgrade(fleet);
    tokio::spawn(probe_forever(weak.clone()));
    tokio::spawn(refresh_forever(weak));
}

async fn probe_forever(fleet: Weak<Fleet>) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(fleet) = fleet.upgrade() else { return };
        let membership = fleet.membership();
        let path = format!("{FLEET_PREFIX}health");
        // Each member on its own task: one that does not answer (its probe waits out the
        // peer timeout) must not delay noticing the others.
        for member in membership.members.iter().filter(|m| !m.is_self) {
            if !member.health.start_probe() {
                continue;
            }
            let Some(head) = fleet.endpoint_head(member, Method::GET, &path) else {
                member.health.end_probe();
                continue;
            };
            let member = Arc::clone(member);
            tokio::spawn(async move {
                match member.pool.call(&head).await {
                    Ok(StatusCode::OK) => {
                        if !member.health.is_up() {
                            tracing::info!(peer = &*member.name, "fleet: member is up");
                        }
                        member.health.probe_succeeded();
                    }
                    _ => {
                        let was_up = member.health.is_up();
                        member.health.probe_failed();
                        if was_up && !member.health.is_up() {
                            tracing::warn!(peer = &*member.name, "fleet: member is down");
                        }
                    }
                }
                member.health.end_probe();
            });
        }
    }
}

async fn refresh_forever(fleet: Weak<Fleet>) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let Some(fleet) = fleet.upgrade() else { return };
        let by_name = fleet
            .settings
            .load()
            .peers
            .iter()
            .any(|p| matches!(p, PeerSource::Dns { .. }) || matches!(p, PeerSource::Url { host, .. } if host.parse::<std::net::IpAddr>().is_err()));
        if by_name {
            fleet.refresh().await;
        }
    }
}
