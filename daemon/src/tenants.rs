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

/// The runbook's provisioning step: tenant, storage, default chart, the admin user
/// with a single-use invitation, and the welcome mail. Idempotent on the email.
pub async fn provision_customer(
    store: &dyn Store,
    mailer: &crate::mail::Mailer,
    public_url: &str,
    name: &str,
    email: &str,
    plan: &str,
    seats: i64,
) -> anyhow::Result<(Provisioned, Option<crate::access::Invitation>)> {
    let provisioned = provision(store, name, email, plan, seats).await?;
    if !provisioned.created {
        return Ok((provisioned, None));
    }
    let tenant = &provisioned.tenant;
    store
        .audit(
            &tenant.id,
            "cli",
            "tenant.provisioned",
            &format!("{} on plan {plan} with {seats} seat(s)", tenant.name),
        )
        .await?;
    let invitation = crate::access::invite(
        store,
        mailer,
        public_url,
        tenant,
        email,
        crate::access::Role::Admin,
        "cli",
    )
    .await?;
    Ok((provisioned, Some(invitation)))
}

/// Tenant, storage and default chart of accounts (no users).
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

/// Changes the plan and seat count; plan-gated features follow the plan.
pub async fn set_plan(
    store: &dyn Store,
    tenant: &Tenant,
    plan: &str,
    seats: Option<i64>,
    actor: &str,
) -> anyhow::Result<Tenant> {
    anyhow::ensure!(
        PLANS.contains(&plan),
        "unknown plan '{plan}': use lite or pro"
    );
    let seats = seats.unwrap_or(tenant.seats);
    anyhow::ensure!(
        (1..=10_000).contains(&seats),
        "--users must be between 1 and 10000"
    );
    let taken = store.users(tenant).await?.len() as i64;
    anyhow::ensure!(
        taken <= seats,
        "{taken} users already hold seats; remove some before going down to {seats}"
    );
    let mut updated = store.set_plan(tenant, plan, seats).await?;
    // A feature follows the plan: switched on when bought, off when no longer included.
    let staff = plan_allows(plan, "staff");
    if updated.settings.features.staff != staff {
        let mut settings = updated.settings.clone();
        settings.features.staff = staff;
        updated = store.update_settings(&updated, &settings).await?.0;
    }
    store
        .audit(
            &tenant.id,
            actor,
            "tenant.plan_changed",
            &format!("{} → {plan}, {seats} seat(s)", tenant.plan),
        )
        .await?;
    Ok(updated)
}

/// Why settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error("settings are not valid: {0}")]
    Invalid(String),
    #[error("settings field 'features.staff': the {plan} plan does not include staff cost; upgrade to pro with `ledgersync tenant set-plan`")]
    UpgradeRequired { plan: String },
    #[error(transparent)]
    Store(#[from] ledgersync_store::StoreError),
}

/// Validates and applies settings in the runbook's JSON shape. A feature the plan
/// does not include is refused with an upgrade message; a new timezone re-dates the
/// ledger.
pub async fn configure(
    store: &dyn Store,
    tenant: &Tenant,
    json: &str,
    actor: &str,
) -> Result<(Tenant, u64), ConfigureError> {
    let settings: TenantSettings =
        serde_json::from_str(json).map_err(|e| ConfigureError::Invalid(e.to_string()))?;
    settings
        .validate()
        .map_err(|e| ConfigureError::Invalid(e.to_string()))?;
    if settings.features.staff && !plan_allows(&tenant.plan, "staff") {
        return Err(ConfigureError::UpgradeRequired {
            plan: tenant.plan.clone(),
        });
    }
    let (updated, moved) = store.update_settings(tenant, &settings).await?;
    store
        .audit(
            &tenant.id,
            actor,
            "settings.changed",
            &format!("{moved} transaction(s) re-dated"),
        )
        .await?;
    Ok((updated, moved))
}
