//! The deployment runbook's checklist, as checks a machine can run.

use ledgersync_store::{Store, Tenant};
use serde::Serialize;

use crate::tenants::plan_allows;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

fn check(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        check: name.into(),
        ok,
        detail: detail.into(),
    }
}

pub async fn verify(store: &dyn Store, tenant: &Tenant) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();

    let members = store.users(tenant).await?;
    let admins: Vec<&str> = members
        .iter()
        .filter(|m| m.role == "admin" && m.status == "active")
        .map(|m| m.email.as_str())
        .collect();
    let invited_admins: Vec<&str> = members
        .iter()
        .filter(|m| m.role == "admin" && m.status != "active")
        .map(|m| m.email.as_str())
        .collect();
    checks.push(if !admins.is_empty() {
        check(
            "admin can log in",
            true,
            format!(
                "{} accepted the invitation and has a password",
                admins.join(", ")
            ),
        )
    } else if !invited_admins.is_empty() {
        check(
            "admin can log in",
            false,
            format!(
                "{} has not accepted the invitation yet (`ledgersync user invite` sends a new one)",
                invited_admins.join(", ")
            ),
        )
    } else {
        check(
            "admin can log in",
            false,
            "the tenant has no admin: invite one with `ledgersync user invite --role admin`",
        )
    });

    let postings = store.posting_count(tenant).await?;
    let all_loads = store.loads(tenant).await?;
    checks.push(match all_loads.last() {
        Some(last) if last.status != "succeeded" => check(
            "data loaded",
            false,
            format!(
                "{postings} postings, but the last load {} ({}) at {} failed: {}",
                last.origin,
                last.stream,
                last.loaded_at,
                last.problem.as_deref().unwrap_or("no reason recorded")
            ),
        ),
        Some(last) if postings > 0 => check(
            "data loaded",
            true,
            format!(
                "{postings} postings; last load {} ({}) at {} succeeded",
                last.origin, last.stream, last.loaded_at
            ),
        ),
        _ => check(
            "data loaded",
            false,
            "no data yet: import a file, push records or sync a source",
        ),
    });

    let features = &tenant.settings.features;
    let enabled = [
        ("pl", features.pl),
        ("cashFlow", features.cash_flow),
        ("cogs", features.cogs),
        ("staff", features.staff),
    ];
    let mut problems = Vec::new();
    for (name, on) in enabled {
        let purchased = plan_allows(&tenant.plan, if name == "staff" { "staff" } else { name });
        if purchased && !on {
            problems.push(format!("{name} is purchased but disabled"));
        }
        if !purchased && on {
            problems.push(format!(
                "{name} is enabled but not in the {} plan",
                tenant.plan
            ));
        }
    }
    checks.push(if problems.is_empty() {
        let on: Vec<&str> = enabled
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
        check(
            "features match the plan",
            true,
            format!("{} plan: {}", tenant.plan, on.join(", ")),
        )
    } else {
        check("features match the plan", false, problems.join("; "))
    });

    // One seat per membership, invited or active.
    let active = members.iter().filter(|m| m.status == "active").count();
    let invited = members.len() - active;
    let taken = members.len() as i64;
    checks.push(if taken > tenant.seats {
        check(
            "users within seats",
            false,
            format!(
                "{taken} members ({active} active, {invited} invited) but only {} seat(s): remove members or add seats with `ledgersync tenant set-plan`",
                tenant.seats
            ),
        )
    } else if active == 0 {
        check(
            "users within seats",
            false,
            format!(
                "within {} seat(s), but no one can log in yet: none of the {invited} invited member(s) has accepted",
                tenant.seats
            ),
        )
    } else {
        check(
            "users within seats",
            true,
            format!(
                "{active} active and {invited} invited of {} seat(s)",
                tenant.seats
            ),
        )
    });

    let mut last_per_source = std::collections::BTreeMap::new();
    for load in all_loads.iter().filter(|l| l.status == "succeeded") {
        last_per_source.insert(load.source.clone(), load);
    }
    for (source, load) in last_per_source {
        let held = store.load_totals(tenant, load.id).await?;
        let ok = held.transactions == load.transactions
            && held.postings == load.postings
            && held.control_sum == load.control_sum;
        checks.push(check(
            format!("{source} reconciles"),
            ok,
            format!(
                "last load read {} row(s) into {} transaction(s), {} posting(s), control sum {}; the ledger holds {}, {}, {}",
                load.rows_read, load.transactions, load.postings, load.control_sum, held.transactions, held.postings, held.control_sum
            ),
        ));
    }
    for connector in store.connectors(&tenant.id).await? {
        let last = store
            .sync_runs(&tenant.id, Some(&connector.name), 1)
            .await?
            .into_iter()
            .next();
        let name = format!("connector {} syncs", connector.name);
        checks.push(
            match (&connector.pause_reason, connector.paused_at.is_some(), last) {
                (reason, true, _) => check(
                    name,
                    false,
                    format!(
                        "paused ({}); `ledgersync connector resume` once it is fixed",
                        reason.as_deref().unwrap_or("by the operator")
                    ),
                ),
                (_, false, None) => check(
                    name,
                    false,
                    "never synced: `ledgersync connector test`, then `ledgersync connector sync`",
                ),
                (_, false, Some(run)) if run.status == "failed" => check(
                    name,
                    false,
                    format!(
                        "the last run ({}, {}) failed, {} time(s) in a row: {}",
                        run.stream,
                        run.started_at,
                        connector.failures,
                        run.error.as_deref().unwrap_or("no reason recorded")
                    ),
                ),
                (_, false, Some(run)) => check(
                    name,
                    true,
                    format!(
                    "last run ({}, {}) {}: {} row(s) read, {} posting(s) written, control sum {}",
                    run.stream,
                    run.started_at,
                    run.status,
                    run.rows_read,
                    run.rows_written,
                    run.control_sum
                ),
                ),
            },
        );
    }
    Ok(checks)
}
