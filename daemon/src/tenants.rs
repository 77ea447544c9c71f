//! Provisioning: a tenant, its storage and its default chart of accounts.

use ledgersync_config::TenantSettings;
use ledgersync_schemas::default_chart;
use ledgersync_store::{NewTenant, Store, Tenant};

/// Plans and the features each includes.
pub const PLANS: [&str; 2] = ["lite", "pro"];

#[derive(Debug, Clone)]
pub struct Provisioned {
    pub tenant: Tenant,
    /// False when a tenant with this admin email already existed.
    pub created: bool,
}

pub async fn provision(
    store: &dyn Store,
    name: &str,
    email: &str,
    plan: &str,
    seats: i64,
) -> anyhow::Result<Provisioned> {
    anyhow::ensure!(
        PLANS.contains(&plan),
        "unknown plan '{plan}': use lite or pro"
    );
    anyhow::ensure!(
        (1..=10_000).contains(&seats),
        "--users must be between 1 and 10000"
    );
    anyhow::ensure!(
        email.contains('@') && !email.contains(char::is_whitespace) && email.len() <= 254,
        "'{email}' is not an email address"
    );
    let mut settings = TenantSettings::new_default(name);
    settings.features.staff = plan == "pro";
    settings.validate()?;
    let (tenant, created) = store
        .create_tenant(NewTenant {
            name: name.trim().to_string(),
            admin_email: email.to_string(),
            plan: plan.to_string(),
            seats,
            settings,
        })
        .await?;
    if created {
        store.upsert_accounts(&tenant, &default_chart()).await?;
    }
    Ok(Provisioned { tenant, created })
}

/// A tenant by id or slug, or an error naming what was asked for.
pub async fn find(store: &dyn Store, id_or_slug: &str) -> anyhow::Result<Tenant> {
    store
        .tenant(id_or_slug)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant with id or slug '{id_or_slug}'"))
}

/// Features each plan includes.
pub fn plan_allows(plan: &str, feature: &str) -> bool {
    match feature {
        "staff" => plan == "pro",
        _ => PLANS.contains(&plan),
    }
}

/// Validates and applies settings in the runbook's JSON shape. A feature the plan
/// does not include is refused with an upgrade message; a new timezone re-dates the
/// ledger.
pub async fn configure(
    store: &dyn Store,
    tenant: &Tenant,
    json: &str,
) -> anyhow::Result<(Tenant, u64)> {
    let settings: TenantSettings =
        serde_json::from_str(json).map_err(|e| anyhow::anyhow!("settings are not valid: {e}"))?;
    settings.validate()?;
    if settings.features.staff && !plan_allows(&tenant.plan, "staff") {
        anyhow::bail!(
            "settings field 'features.staff': the {} plan does not include staff cost; upgrade to pro with `ledgersync tenant set-plan`",
            tenant.plan
        );
    }
    Ok(store.update_settings(tenant, &settings).await?)
}
