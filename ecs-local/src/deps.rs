//! `dependsOn`: whether a container may start yet, must wait, or never can.

use crate::health::HealthStatus;
use crate::taskdef::Condition;

/// What the dependency rules need to know of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DepView {
    pub started: bool,
    /// Set once the container has exited (or was given up on without starting: `None` code).
    pub exited: Option<Option<i32>>,
    pub health: Option<HealthStatus>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Wait,
    Ready,
    Never(String),
}

pub fn condition_met(dep_name: &str, cond: Condition, dep: &DepView) -> Verdict {
    let exited = dep.exited;
    match cond {
        Condition::Start if dep.started => Verdict::Ready,
        Condition::Complete if exited.is_some() && dep.started => Verdict::Ready,
        Condition::Success => match exited {
            Some(Some(0)) => Verdict::Ready,
            Some(Some(code)) => Verdict::Never(format!(
                "dependency {dep_name:?} exited with code {code}, condition SUCCESS can never be met"
            )),
            Some(None) => never_started(dep_name, cond),
            None => Verdict::Wait,
        },
        Condition::Healthy => match (dep.health, exited) {
            (Some(HealthStatus::Healthy), None) => Verdict::Ready,
            (Some(HealthStatus::Unhealthy), _) => Verdict::Never(format!(
                "dependency {dep_name:?} is UNHEALTHY, condition HEALTHY was not met"
            )),
            (_, Some(_)) => Verdict::Never(format!(
                "dependency {dep_name:?} exited before it was HEALTHY"
            )),
            _ => Verdict::Wait,
        },
        _ if exited.is_some() && !dep.started => never_started(dep_name, cond),
        _ => Verdict::Wait,
    }
}

fn never_started(dep_name: &str, cond: Condition) -> Verdict {
    Verdict::Never(format!(
        "dependency {dep_name:?} never started, condition {cond} can never be met"
    ))
}

/// Combines a container's dependencies: any Never wins, then any Wait.
pub fn all_met(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let mut out = Verdict::Ready;
    for v in verdicts {
        match v {
            Verdict::Never(_) => return v,
            Verdict::Wait => out = Verdict::Wait,
            Verdict::Ready => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> DepView {
        DepView {
            started: true,
            ..Default::default()
        }
    }

    fn exited(code: i32) -> DepView {
        DepView {
            started: true,
            exited: Some(Some(code)),
            health: None,
        }
    }

    #[test]
    fn start_complete_success() {
        let pending = DepView::default();
        assert_eq!(
            condition_met("d", Condition::Start, &pending),
            Verdict::Wait
        );
        assert_eq!(
            condition_met("d", Condition::Start, &running()),
            Verdict::Ready
        );
        assert_eq!(
            condition_met("d", Condition::Complete, &running()),
            Verdict::Wait
        );
        assert_eq!(
            condition_met("d", Condition::Complete, &exited(3)),
            Verdict::Ready
        );
        assert_eq!(
            condition_met("d", Condition::Success, &running()),
            Verdict::Wait
        );
        assert_eq!(
            condition_met("d", Condition::Success, &exited(0)),
            Verdict::Ready
        );
        assert!(matches!(
            condition_met("d", Condition::Success, &exited(1)),
            Verdict::Never(m) if m.contains("exited with code 1")
        ));
        let given_up = DepView {
            started: false,
            exited: Some(None),
            health: None,
        };
        assert!(matches!(
            condition_met("d", Condition::Start, &given_up),
            Verdict::Never(_)
        ));
    }

    #[test]
    fn healthy() {
        let mut d = running();
        d.health = Some(HealthStatus::Unknown);
        assert_eq!(condition_met("d", Condition::Healthy, &d), Verdict::Wait);
        d.health = Some(HealthStatus::Healthy);
        assert_eq!(condition_met("d", Condition::Healthy, &d), Verdict::Ready);
        d.health = Some(HealthStatus::Unhealthy);
        assert!(matches!(
            condition_met("d", Condition::Healthy, &d),
            Verdict::Never(_)
        ));
        let mut gone = exited(0);
        gone.health = Some(HealthStatus::Unknown);
        assert!(matches!(
            condition_met("d", Condition::Healthy, &gone),
            Verdict::Never(_)
        ));
    }

    #[test]
    fn combining() {
        assert_eq!(all_met([]), Verdict::Ready);
        assert_eq!(all_met([Verdict::Ready, Verdict::Wait]), Verdict::Wait);
        assert!(matches!(
            all_met([Verdict::Wait, Verdict::Never("x".into())]),
            Verdict::Never(_)
        ));
    }
}
