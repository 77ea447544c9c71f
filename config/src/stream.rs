//! Stream mapping definitions: how rows of one source shape (a POS sales table, a
//! general-ledger export, a financing sheet) become balanced postings. The same
//! definition serves file, database and push sources: it names columns, never a
//! reader.
//!
//! ```toml
//! name = "pos_sales"
//! key = ["sale_id"]
//! date = { column = "sold_at", source_timezone = "UTC" }
//! branch = "outlet"
//! numeric = ["net_amount", "tax"]
//!
//! [lookups.payment_account]
//! cash = "1000"
//! qris = "1020"
//!
//! [[templates]]
//! postings = [
//!   { account = { lookup = "payment_account", column = "payment_method" }, amount = "net_amount + tax" },
//!   { account = "4000", amount = "-net_amount" },
//!   { account = "2100", amount = "-tax" },
//! ]
//! ```
//!
//! Amounts and `when` conditions are SQL expressions evaluated by polars.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDef {
    pub name: String,
    /// Columns whose values, joined, identify the transaction within the source.
    pub key: Vec<String>,
    pub date: DateSpec,
    /// Column holding the branch (outlet); none means the head office ("").
    #[serde(default)]
    pub branch: Option<String>,
    /// Column holding a memo.
    #[serde(default)]
    pub memo: Option<String>,
    /// Column holding the ISO 4217 currency of the row; none means the tenant's.
    #[serde(default)]
    pub currency: Option<String>,
    /// Columns read as exact decimals before expressions see them.
    #[serde(default)]
    pub numeric: Vec<String>,
    /// Columns a file may leave out; they read as empty.
    #[serde(default)]
    pub optional: Vec<String>,
    /// Named tables mapping a column value to an account code.
    #[serde(default)]
    pub lookups: BTreeMap<String, BTreeMap<String, String>>,
    /// Tried in order; the first whose `when` holds maps the row.
    pub templates: Vec<TemplateDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateSpec {
    pub column: String,
    /// chrono format; without one, RFC 3339, `%Y-%m-%d %H:%M:%S` and `%Y-%m-%d` are
    /// tried in turn.
    #[serde(default)]
    pub format: Option<String>,
    /// Timezone that naive timestamps were written in; defaults to the tenant's.
    /// Timestamps carrying an offset ignore it.
    #[serde(default)]
    pub source_timezone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDef {
    /// SQL condition over the row's columns, e.g. `kind = 'loan'`; none matches all.
    #[serde(default)]
    pub when: Option<String>,
    pub postings: Vec<PostingSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostingSpec {
    pub account: AccountSpec,
    /// SQL expression over the numeric columns, e.g. `-(amount - fee)`.
    pub amount: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum AccountSpec {
    /// A fixed account code.
    Code(String),
    /// The account code is the column's value.
    Column { column: String },
    /// The column's value looked up in a named table, with an optional fallback.
    Lookup {
        lookup: String,
        column: String,
        #[serde(default)]
        default: Option<String>,
    },
}

/// The built-in stream for general-ledger exports: one posting per row,
/// `date,txn_id,account,amount` plus optional `currency,branch,memo`.
pub const BUILTIN_JOURNAL: &str = r#"
name = "journal"
key = ["txn_id"]
date = { column = "date" }
branch = "branch"
memo = "memo"
currency = "currency"
numeric = ["amount"]
optional = ["branch", "memo", "currency"]

[[templates]]
postings = [{ account = { column = "account" }, amount = "amount" }]
"#;

impl StreamDef {
    pub fn from_toml(text: &str) -> Result<StreamDef, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn journal() -> StreamDef {
        Self::from_toml(BUILTIN_JOURNAL).expect("the built-in journal stream parses")
    }

    /// A hash of what the definition says, not how it is written: its canonical
    /// form is the JSON of the parsed definition (fields in declaration order,
    /// lookups sorted), so comments, spacing and key order in the TOML do not
    /// change it, and any change to a column, lookup, template or amount does. A
    /// file loaded under one mapping hash is loaded again under another.
    pub fn mapping_hash(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a stream definition serialises");
        format!("blake3:{}", blake3::hash(&canonical).to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_journal_parses() {
        let journal = StreamDef::journal();
        assert_eq!(journal.key, ["txn_id"]);
        assert_eq!(
            journal.templates[0].postings[0].account,
            AccountSpec::Column {
                column: "account".into()
            }
        );
    }

    #[test]
    fn account_specs_in_all_three_forms() {
        let def = StreamDef::from_toml(
            r#"
name = "pos"
key = ["id"]
date = { column = "sold_at", source_timezone = "UTC" }
numeric = ["net"]
[lookups.pay]
qris = "1020"
[[templates]]
when = "kind = 'sale'"
postings = [
  { account = { lookup = "pay", column = "method", default = "1000" }, amount = "net" },
  { account = "4000", amount = "-net" },
]
"#,
        )
        .unwrap();
        assert!(matches!(
            def.templates[0].postings[0].account,
            AccountSpec::Lookup { .. }
        ));
        assert_eq!(
            def.templates[0].postings[1].account,
            AccountSpec::Code("4000".into())
        );
    }

    #[test]
    fn the_mapping_hash_follows_meaning_not_layout() {
        let written = |text: &str| StreamDef::from_toml(text).unwrap().mapping_hash();
        let base = written(BUILTIN_JOURNAL);
        let reordered = BUILTIN_JOURNAL.replace(
            "memo = \"memo\"\ncurrency = \"currency\"",
            "# a comment\ncurrency = \"currency\"\nmemo = \"memo\"",
        );
        assert_ne!(reordered, BUILTIN_JOURNAL);
        assert_eq!(written(&reordered), base);
        let changed = BUILTIN_JOURNAL.replace("amount = \"amount\"", "amount = \"-amount\"");
        assert_ne!(changed, BUILTIN_JOURNAL);
        assert_ne!(written(&changed), base);
        assert!(base.starts_with("blake3:"), "{base}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = StreamDef::from_toml(
            "name = \"x\"\nkey = []\ndate = { column = \"d\" }\ntemplates = []\nbrnch = \"b\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("brnch"), "{err}");
    }
}
