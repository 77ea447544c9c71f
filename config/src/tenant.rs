//! Tenant settings, in the deployment runbook's JSON shape.

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantSettings {
    /// 1 to 200 characters, not only spaces.
    #[schemars(length(min = 1, max = 200), regex(pattern = r"\S"))]
    pub company_name: String,
    /// Month name the fiscal year starts in, e.g. "January".
    #[schemars(schema_with = "month_name_schema")]
    pub fiscal_year_start: String,
    /// ISO 4217 code of the base currency.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
    /// IANA timezone that source timestamps are bucketed in.
    #[schemars(schema_with = "timezone_schema")]
    pub timezone: String,
    pub features: Features,
}

fn month_name_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<String> = MONTHS
        .iter()
        .map(|m| m[..1].to_ascii_uppercase() + &m[1..])
        .collect();
    schemars::json_schema!({ "type": "string", "enum": names })
}

fn timezone_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
    schemars::json_schema!({ "type": "string", "enum": names })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Features {
    pub pl: bool,
    pub cash_flow: bool,
    pub cogs: bool,
    pub staff: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("settings field '{field}': {reason}")]
pub struct SettingsError {
    pub field: &'static str,
    pub reason: String,
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

impl TenantSettings {
    /// Defaults for a new tenant of the first customer profile (IDR, Jakarta).
    pub fn new_default(company_name: &str) -> TenantSettings {
        TenantSettings {
            company_name: company_name.to_string(),
            fiscal_year_start: "January".to_string(),
            currency: "IDR".to_string(),
            timezone: "Asia/Jakarta".to_string(),
            features: Features {
                pl: true,
                cash_flow: true,
                cogs: true,
                staff: false,
            },
        }
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.company_name.trim().is_empty() || self.company_name.chars().count() > 200 {
            return Err(SettingsError {
                field: "companyName",
                reason: "must be 1 to 200 characters".into(),
            });
        }
        self.fiscal_first_month()?;
        self.tz()?;
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(SettingsError {
                field: "currency",
                reason: format!("'{}' is not an ISO 4217 code such as IDR", self.currency),
            });
        }
        Ok(())
    }

    /// 1 for January … 12 for December.
    pub fn fiscal_first_month(&self) -> Result<u32, SettingsError> {
        let wanted = self.fiscal_year_start.trim().to_ascii_lowercase();
        MONTHS
            .iter()
            .position(|m| *m == wanted)
            .map(|i| i as u32 + 1)
            .ok_or_else(|| SettingsError {
                field: "fiscalYearStart",
                reason: format!(
                    "'{}' is not a month name such as January",
                    self.fiscal_year_start
                ),
            })
    }

    pub fn tz(&self) -> Result<Tz, SettingsError> {
        self.timezone.parse().map_err(|_| SettingsError {
            field: "timezone",
            reason: format!(
                "'{}' is not an IANA timezone such as Asia/Jakarta",
                self.timezone
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_runbook_shape() {
        let json = r#"{"companyName":"Kopi Kenangan","fiscalYearStart":"April","currency":"IDR",
            "timezone":"Asia/Jakarta","features":{"pl":true,"cashFlow":true,"cogs":true,"staff":false}}"#;
        let settings: TenantSettings = serde_json::from_str(json).unwrap();
        settings.validate().unwrap();
        assert_eq!(settings.fiscal_first_month().unwrap(), 4);
    }

    #[test]
    fn names_the_bad_field() {
        let mut settings = TenantSettings::new_default("Kopi");
        settings.timezone = "Asia/Jakartaa".into();
        assert_eq!(settings.validate().unwrap_err().field, "timezone");
        settings.timezone = "Asia/Jakarta".into();
        settings.fiscal_year_start = "Smarch".into();
        assert_eq!(settings.validate().unwrap_err().field, "fiscalYearStart");
    }
}
