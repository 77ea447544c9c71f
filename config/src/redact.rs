//! Connection URLs fit for messages, logs and Debug output: every secret replaced.

/// Query parameters that carry secrets in the URL forms sqlx, libpq and the MySQL
/// and SQL Server drivers accept (`?password=…`, `?sslpassword=…`).
const SECRET_PARAMETERS: &[&str] = &["password", "pass", "pwd", "sslpassword", "secret"];

const MASK: &str = "***";

/// The URL with its password (user info or query parameter) replaced by `***`. A
/// text that does not parse as a URL is masked whole after its scheme, since it
/// may be a malformed URL with a password in it.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://{MASK}"),
            None => MASK.to_string(),
        };
    };
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = parsed.set_password(Some(MASK));
    }
    let secret = |name: &str| {
        SECRET_PARAMETERS
            .iter()
            .any(|s| name.eq_ignore_ascii_case(s))
    };
    if parsed.query_pairs().any(|(name, _)| secret(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret(&name) {
                    MASK.into()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string().replace("%2A%2A%2A", MASK)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/ledger"),
            "postgres://app:***@db:5432/ledger"
        );
        assert_eq!(
            redact_url("postgres://app@db/ledger?sslmode=require&password=s3cret"),
            "postgres://app@db/ledger?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("mysql://root:p%40ss@127.0.0.1:3306/pos?PWD=x"),
            "mysql://root:***@127.0.0.1:3306/pos?PWD=***"
        );
        assert_eq!(redact_url("sqlite://data"), "sqlite://data");
        assert_eq!(redact_url("postgres://app:s3cret@[bad"), "postgres://***");
        assert!(!format!(
            "{:?}",
            crate::StoreConfig {
                url: "postgres://a:s3cret@h/d".into()
            }
        )
        .contains("s3cret"));
    }
}
